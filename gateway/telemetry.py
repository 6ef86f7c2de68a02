"""The gateway's Prometheus metrics: what each stage counts, exposed on ``metrics.listen``.

Every name starts ``roadside_gateway_``. Latencies are histograms observed as batches are
acknowledged; everything else is read from the stages' own counters at scrape time
(collectors), so the stages carry no metrics code. Store figures are read on the store's
worker thread.

=========================================  =======  ===========================================
metric                                     type     meaning
=========================================  =======  ===========================================
frames_accepted_total                      counter  frames that passed CRC, tag and replay
frames_bad_total{reason}                   counter  refused frames by reason (SPEC 10 names)
frames_bad_by_node_total{node}             counter  refused frames by claimed node
records_stored_total                       counter  new records committed to the store
duplicates_total                           counter  frames the store already held (acked again)
commit_failures_total{cause}               counter  groups not stored (cause full or error)
records_published_total                    counter  records acknowledged by the broker
batches_published_total{topic}             counter  publishes of data and alarm packs
publish_failures_total                     counter  publishes not acknowledged
publish_latency_seconds{topic}             histo    publish to PUBACK
alarm_latency_seconds                      histo    alarm frame received to its PUBACK
queue_records{priority}                    gauge    records in the store (routine, alarm)
queue_bytes                                gauge    accounted bytes of the store
queue_in_flight                            gauge    records handed to the publisher
queue_oldest_age_seconds                   gauge    age of the oldest stored record
gap_reports_pending                        gauge    gap reports not yet published
records_dropped_total{node,reason}         counter  records the store dropped (bounds)
mqtt_connected                             gauge    1 while connected to the broker
mqtt_connects_total / _disconnects_total   counter  connections made / lost
mqtt_connect_failures_total                counter  failed connection attempts
serial_port_open{port}                     gauge    1 while the port is open
serial_bytes_in_total{port}                counter  bytes read
serial_unplugs_total{port}                 counter  an open port that went away
serial_write_drops_total{port}             counter  downlink frames the port could not take
downlink_frames_total{type}                counter  acks, time and config frames sent
config_refused_total                       counter  MQTT config payloads that did not parse
downlink_skipped_total                     counter  downlink frames not sent (store full)
=========================================  =======  ===========================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.metrics import Family, Registry
from gateway.store import ALARM

if TYPE_CHECKING:
    from gateway.batcher import Batch
    from gateway.service import Service

P = "roadside_gateway_"
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
                   30.0, 60.0, 300.0)


def register(svc: Service, registry: Registry) -> None:
    """Registers the gateway's metrics for `svc` on `registry`."""
    publish_latency = registry.histogram(
        P + "publish_latency_seconds", "Seconds from publish to the broker's acknowledgement.",
        LATENCY_BUCKETS, ("topic",))
    alarm_latency = registry.histogram(
        P + "alarm_latency_seconds",
        "Seconds from an alarm frame's arrival at the gateway to its PUBACK.", LATENCY_BUCKETS)

    def on_published(latency_s: float, batch: Batch, now_ms: int) -> None:
        publish_latency.observe(latency_s, topic="alarm" if batch.alarm else "data")
        for r in batch.records:
            if r.priority == ALARM:
                alarm_latency.observe(max(0, now_ms - r.received_ms) / 1000)

    svc.publisher.set_on_published(on_published)

    def pipeline() -> list[Family]:
        v, ing, b, pub, dl = (svc.verifier, svc.ingest.stats, svc.batcher, svc.publisher.stats,
                              svc.downlink.stats)
        bad = Family.counter(P + "frames_bad", "Refused frames by reason.", ("reason",))
        for reason, n in sorted(v.bad.items()):
            bad.add(n, reason=reason)
        by_node = Family.counter(P + "frames_bad_by_node", "Refused frames by claimed node.",
                                 ("node",))
        for node, n in sorted(v.bad_by_node.items()):
            by_node.add(n, node=node)
        failures = Family.counter(P + "commit_failures", "Commit groups not stored.",
                                  ("cause",))
        failures.add(ing.full_failures, cause="full")
        failures.add(ing.commit_failures - ing.full_failures, cause="error")
        batches = Family.counter(P + "batches_published", "Acknowledged publishes.",
                                 ("topic",))
        batches.add(b.batches - b.alarm_batches, topic="data")
        batches.add(b.alarm_batches, topic="alarm")
        down = Family.counter(P + "downlink_frames", "Frames sent to nodes.", ("type",))
        down.add(dl.acks, type="ack")
        down.add(dl.times, type="time")
        down.add(dl.configs, type="config")
        return [
            Family.counter(P + "frames_accepted", "Frames that passed every check."
                           ).add(v.accepted),
            bad, by_node,
            Family.counter(P + "records_stored", "New records committed.").add(ing.committed),
            Family.counter(P + "duplicates", "Frames already stored, acked again."
                           ).add(ing.duplicates),
            failures,
            Family.counter(P + "records_published", "Records acknowledged by the broker."
                           ).add(b.records),
            batches,
            Family.counter(P + "publish_failures", "Publishes not acknowledged.").add(b.failures),
            Family.gauge(P + "mqtt_connected", "1 while connected to the broker."
                         ).add(int(svc.publisher.connected)),
            Family.counter(P + "mqtt_connects", "Connections made.").add(pub.connects),
            Family.counter(P + "mqtt_disconnects", "Connections lost.").add(pub.disconnects),
            Family.counter(P + "mqtt_connect_failures", "Failed connection attempts."
                           ).add(pub.connect_failures),
            down,
            Family.counter(P + "config_refused", "Config payloads that did not parse."
                           ).add(dl.config_refused),
            Family.counter(P + "downlink_skipped", "Downlink frames not sent: no seq could "
                           "be reserved (store write failed).").add(dl.seq_failures),
        ]

    def serial() -> list[Family]:
        fams = [
            Family.gauge(P + "serial_port_open", "1 while the port is open.", ("port",)),
            Family.counter(P + "serial_bytes_in", "Bytes read.", ("port",)),
            Family.counter(P + "serial_unplugs", "Open ports that went away.", ("port",)),
            Family.counter(P + "serial_write_drops", "Downlink frames not written.",
                           ("port",)),
        ]
        for path, link in svc.links.items():
            st = link.stats
            for fam, value in zip(fams, (int(link.is_open), st.bytes_in, st.unplugs,
                                         st.write_drops), strict=True):
                fam.add(value, port=path)
        return fams

    async def store() -> list[Family]:
        st = await svc.worker.call(svc.store.stats, svc.utc_ms())
        records = Family.gauge(P + "queue_records", "Records in the store.", ("priority",))
        records.add(st.routine, priority="routine")
        records.add(st.alarms, priority="alarm")
        dropped = Family.counter(P + "records_dropped", "Records dropped by the store bounds.",
                                 ("node", "reason"))
        for (node, reason), n in sorted(st.dropped.items()):
            dropped.add(n, node=node, reason=reason)
        age = Family.gauge(P + "queue_oldest_age_seconds", "Age of the oldest stored record.")
        if st.oldest_age_s is not None:
            age.add(st.oldest_age_s)
        return [
            records,
            Family.gauge(P + "queue_bytes", "Accounted bytes of the store.").add(st.bytes),
            Family.gauge(P + "queue_in_flight", "Records handed to the publisher."
                         ).add(st.in_flight),
            age,
            Family.gauge(P + "gap_reports_pending", "Gap reports not yet published."
                         ).add(st.gap_reports),
            dropped,
        ]

    registry.collector(pipeline, name="pipeline")
    registry.collector(serial, name="serial")
    registry.collector(store, name="store")
