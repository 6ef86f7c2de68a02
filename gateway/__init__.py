# roadside-gateway: the Raspberry Pi service (serial in, verified, queued on disk, MQTT out).
