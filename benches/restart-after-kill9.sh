#!/usr/bin/env bash
# Starts the server on ./d5 and times start -> first successful Publish.
B=${EVENTBUS_BIN:-target/release/eventbus}
# The server reads EVENTBUS_* variables as config and refuses unknown ones.
unset EVENTBUS_BIN
start=$(date +%s.%N)
$B serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --data-dir ./d5 --durability buffered --log-format json > s6.log 2>&1 &
# The gRPC address; the metrics port's "addr" is logged first.
while ! grep -aq '"eventbus serving"' s6.log; do sleep 0.005; done
ADDR=$(grep -a '"eventbus serving"' s6.log | grep -a -o '"addr":"[^"]*"' | head -1 | cut -d'"' -f4)
until $B --server $ADDR publish restart-probe x > /dev/null 2>&1; do sleep 0.005; done
end=$(date +%s.%N)
echo "start -> first successful publish: $(echo "$end - $start" | bc) s"
