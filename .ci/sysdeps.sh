#!/usr/bin/env sh
# Installs the Debian packages the tests need when their commands are missing.
# Each line: command package. Runs apt-get only as root (CI is root); otherwise says what to run.
set -eu
missing=""
while read -r cmd pkg; do
  [ -z "$cmd" ] && continue
  case "$cmd" in \#*) continue ;; esac
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
    missing="$missing $pkg"
  fi
done <<'LIST'
# command      Debian package   (used by)
make           make
# gateway/tests/brokers.py: real MQTT brokers (mosquitto also gives mosquitto_passwd)
mosquitto      mosquitto
nats-server    nats-server
rabbitmq-server rabbitmq-server
# hil_tests/tests/test_faults.py: the gateway's clock jumps (faketime pulls in libfaketime)
faketime       faketime
LIST
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "installing Debian packages:$missing"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
else
  echo "missing Debian packages:$missing; install them with: sudo apt-get install$missing" >&2
  exit 1
fi
