#!/usr/bin/env bash
# Starts the server on ./d5 and times start -> first successful Publish.
B=${EVENTBUS_BIN:-target/release/eventbus}
start=$(date +%s.%N)
$B serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --data-dir ./d5 --durability buffered --log-format json > s6.log 2>&1 &
while ! grep -aq '"addr"' s6.log; do sleep 0.005; done
ADDR=$(grep -a -o '"addr":"[^"]*"' s6.log | head -1 | cut -d'"' -f4)
until $B --server $ADDR publish restart-probe x > /dev/null 2>&1; do sleep 0.005; done
end=$(date +%s.%N)
echo "start -> first successful publish: $(echo "$end - $start" | bc) s"
