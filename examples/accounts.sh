#!/usr/bin/env bash
# Sample accounts on the embedded store: one space, two accounts, a token each.
set -euo pipefail
P=${PROVISIO:-cargo run --quiet --}
$P space add sip.example.com --host 127.0.0.1 --header-mode linphone-user-agent --base-rc examples/base.linphonerc
echo 'change-me-alice' | $P account add alice@sip.example.com --password-stdin --display-name 'Alice Example'
$P account add bob@sip.example.com --set turn=1 --set stun_server=stun.example.com
$P token alice@sip.example.com --qr
$P token bob@sip.example.com --json
