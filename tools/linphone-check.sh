#!/usr/bin/env bash
# tools/linphone-check.sh — provision a real Linphone client from a provisio URL.
#
# Usage: tools/linphone-check.sh [options] URL
#
# Starts Debian's console client (linphonec, liblinphone 5.1) on a fresh configuration whose
# [misc] config-uri is URL, waits until liblinphone has fetched and applied the document, and
# prints the configuration it applied (its linphonerc) on standard output. The request the
# client sent, the answer's status and a one-line verdict go to standard error:
#   PROVISIONING=Successful|Failed|Timeout|NothingApplied http_status=… set=N kept=N …
#
# Options:
#   --register        then start the client again on the applied configuration, with the
#                     network on, and wait until every account with reg_sendregister=1 has
#                     registered: REGISTRATION=Ok|Failed on standard error. Only registrars on
#                     loopback are contacted.
#   --pre-rc FILE     a linphonerc fragment the client holds before provisioning (local values,
#                     or a [proxy_0] + [sip] default_proxy=0 so that it sends a From header)
#   --timeout SECONDS how long to wait for provisioning, and for registration (default 20)
#   --user-agent UA   the User-Agent the client sends (default Linphonec/5.1.65)
#   --root-ca FILE    PEM certificates trusted for an https:// URL
#   --any-host        allow a URL whose host is not loopback (127.0.0.1, localhost, [::1])
#   --keep            keep the work directory (its path is printed)
#   --quiet           print only the verdict lines on standard error
#
# Exit status:
#   0  provisioned (and, with --register, registered)
#   1  provisioning failed: an HTTP error status, a 401, invalid or empty XML, a connection
#      error, or a URI liblinphone refuses
#   2  no result within the timeout, or linphonec exited early
#   3  liblinphone reported success but applied nothing (the root element is not <config>)
#   4  --register: an account did not register
#   5  --register: the provisioned registrar is not on loopback (nothing was sent)
#   64 usage error; 69 linphonec is not installed (apt-get install linphone-cli)
#
# How it knows provisioning is over: liblinphone logs "Sal::unlistenPorts(): done" for the
# first time when the configuring step ends, successful or not (linphone_configuring_terminated
# re-applies the transports). The verdict is read from the same debug log: the HTTP status
# line, libxml2's "Can't parse string", "Invalid provisioning URI", "read [0] bytes of body",
# "root element is not \"config\"". liblinphone 5.1 follows no redirect and retries nothing.
set -u

usage() {
  awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0" >&2
  exit 64
}

timeout_s=20
user_agent="Linphonec/5.1.65"
pre_rc=""
root_ca=""
register=""
any_host=""
keep=""
quiet=""
url=""
while [ $# -gt 0 ]; do
  case "$1" in
    --register) register=1 ;;
    --pre-rc) pre_rc=${2:?--pre-rc needs a file}; shift ;;
    --timeout) timeout_s=${2:?--timeout needs seconds}; shift ;;
    --user-agent) user_agent=${2:?--user-agent needs a value}; shift ;;
    --root-ca) root_ca=${2:?--root-ca needs a file}; shift ;;
    --any-host) any_host=1 ;;
    --keep) keep=1 ;;
    --quiet) quiet=1 ;;
    -h|--help) usage ;;
    -*) echo "unknown option $1" >&2; usage ;;
    *) [ -z "$url" ] || usage; url=$1 ;;
  esac
  shift
done
[ -n "$url" ] || usage
case "$timeout_s" in ''|*[!0-9]*) echo "--timeout takes whole seconds" >&2; exit 64 ;; esac
[ -z "$pre_rc" ] || [ -r "$pre_rc" ] || { echo "cannot read $pre_rc" >&2; exit 64; }
command -v linphonec >/dev/null 2>&1 || {
  echo "linphonec not found: apt-get install --no-install-recommends linphone-cli" >&2
  exit 69
}

log() { echo "$*" >&2; }
detail() { [ -n "$quiet" ] || echo "$*" >&2; }

# --- only loopback, unless asked -------------------------------------------------------------
scheme=${url%%:*}
if [ "$scheme" = http ] || [ "$scheme" = https ]; then
  authority=${url#*://}
  authority=${authority%%/*}
  authority=${authority%%\?*}
  host=${authority%:*}
  case "$authority" in \[*) host=${authority%%]*}]; esac
  case "$host" in
    127.0.0.1|localhost|"[::1]") ;;
    *) [ -n "$any_host" ] || { log "refusing a non-loopback host '$host' (add --any-host)"; exit 64; } ;;
  esac
fi

# --- a private home and configuration ----------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/linphone-check.XXXXXX")
client=""
# shellcheck disable=SC2329 # invoked by the EXIT trap
cleanup() {
  { exec 3>&-; } 2>/dev/null
  if [ -n "$client" ] && kill -0 "$client" 2>/dev/null; then
    kill "$client" 2>/dev/null; sleep 0.2; kill -9 "$client" 2>/dev/null
  fi
  if [ -n "$keep" ]; then log "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap '' PIPE
# liblinphone 5.1 does not start (and says nothing) without its data directory.
mkdir -p "$work/home/.local/share/linphone"

# In a linphonerc, a later value of a key wins: our defaults, then the caller's fragment, then
# what must hold for the check (no network, so no REGISTER during provisioning; the URL).
rc="$work/linphonerc"
{
  echo "[sip]"
  echo "user_agent=$user_agent"
  # A random UDP port on loopback only (the defaults bind 5060 on every interface).
  echo "sip_port=-1"
  echo "sip_tcp_port=0"
  echo "sip_tls_port=0"
  echo "bind_address=127.0.0.1"
  [ -z "$root_ca" ] || echo "root_ca=$root_ca"
  echo
  if [ -n "$pre_rc" ]; then cat "$pre_rc"; echo; fi
  echo "[sip]"
  echo "auto_net_state_mon=0"
  echo
  echo "[misc]"
  echo "config-uri=$url"
} > "$rc"

# linphonec reads commands on standard input; a FIFO held open keeps it running until "quit".
start_client() { # rc-file log-file
  rm -f "$work/stdin"
  mkfifo "$work/stdin"
  HOME="$work/home" timeout -k 5 $((timeout_s + 30)) \
    linphonec -c "$1" -d 6 -l "$2" < "$work/stdin" > "$work/linphonec.out" 2>&1 &
  client=$!
  exec 3>"$work/stdin"
}
stop_client() {
  # After a 401 it cannot answer, linphonec asks for a password and eats the next line.
  for _ in 1 2 3; do
    echo quit >&3 2>/dev/null
    for _ in $(seq 20); do kill -0 "$client" 2>/dev/null || break 2; sleep 0.1; done
  done
  exec 3>&-
  for _ in $(seq 40); do kill -0 "$client" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$client" 2>/dev/null; then
    log "linphonec did not quit; killing it"
    kill "$client" 2>/dev/null
  fi
  wait "$client" 2>/dev/null
  client=""
}
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# Waits until the log matches an extended regex: 0 seen, 1 timed out, 2 the client is gone.
wait_for() { # log-file regex seconds
  local end=$(( $(now_ms) + $3 * 1000 ))
  while [ "$(now_ms)" -lt "$end" ]; do
    grep -qE "$2" "$1" 2>/dev/null && return 0
    kill -0 "$client" 2>/dev/null || return 2
    sleep 0.05
  done
  return 1
}

# --- provisioning ------------------------------------------------------------------------------
plog="$work/provisioning.log"
started=$(now_ms)
start_client "$rc" "$plog"
wait_for "$plog" 'Sal::unlistenPorts\(\): done' "$timeout_s"
waited=$?
elapsed_ms=$(( $(now_ms) - started ))
stop_client

request=$(awk '/^GET /{on=1} on{ if ($0 ~ /^\r?$/) exit; print }' "$plog" | tr -d '\r')
# The last status line: a Digest retry answers after a 401.
status_line=$(grep -E '^HTTP/1\.[01] [0-9]{3}' "$plog" | tail -n 1 | tr -d '\r')
status=$(echo "$status_line" | awk '{print $2}')
set_count=$(grep -c 'liblinphone-message-Set ' "$plog")
kept_count=$(grep -c "liblinphone-message-Don't touch " "$plog")
verdict=Successful
reason=""
code=0
fail() { verdict=$1; code=$2; reason=$3; }
if [ "$waited" -ne 0 ]; then
  if [ "$waited" -eq 2 ]; then
    fail Timeout 2 "linphonec exited early (see $work/linphonec.out with --keep)"
  else
    fail Timeout 2 "no result within ${timeout_s}s"
  fi
elif grep -q 'Invalid provisioning URI' "$plog"; then
  fail Failed 1 "liblinphone refuses the URI (5.1 accepts http://, https:// and file:// only)"
elif [ "$scheme" = file ]; then
  if grep -q 'could not open' "$plog"; then fail Failed 1 "file not readable"
  elif grep -q "Can't parse string" "$plog"; then fail Failed 1 "invalid XML"; fi
elif [ -z "$status" ]; then
  fail Failed 1 "no HTTP answer: $(grep -m2 -E 'belle-sip-error-' "$plog" | sed 's/.*belle-sip-error-//' | tr '\n' ' ')"
elif [ "$status" = 401 ]; then
  fail Failed 1 "401: liblinphone 5.1 answers a challenge only with a matching [auth_info_N]"
elif [ "$status" != 200 ]; then
  fail Failed 1 "HTTP $status (redirects are not followed)"
elif grep -q "Can't parse string" "$plog"; then
  fail Failed 1 "invalid XML"
  grep -q 'unknown encoding' "$plog" && reason="$reason (liblinphone decodes deflate, not gzip)"
elif grep -q 'read \[0\] bytes of body' "$plog" && [ "$set_count" -eq 0 ] && [ "$kept_count" -eq 0 ]; then
  fail Failed 1 "empty document (no Content-Length and no chunked encoding?)"
elif grep -q 'root element is not "config"' "$plog"; then
  fail NothingApplied 3 "the root element is not <config>"
fi

if [ -n "$request" ]; then
  detail "--- request sent by liblinphone"
  while IFS= read -r line; do detail "> $line"; done <<< "$request"
fi
[ -z "$status_line" ] || detail "< $status_line"
grep -E "liblinphone-(warning|error)-(ignored|root element|Can't parse|Entity:)" "$plog" \
  | sed 's/^[0-9: -]*liblinphone-/  /' | head -20 | while read -r line; do detail "$line"; done
log "PROVISIONING=$verdict http_status=${status:--} set=$set_count kept=$kept_count elapsed_ms=$elapsed_ms${reason:+ reason=\"$reason\"}"

# The configuration the client holds now (unchanged from the start when provisioning failed).
cat "$rc"
[ "$code" -eq 0 ] || exit "$code"
[ -n "$register" ] || exit 0

# --- registration --------------------------------------------------------------------------------
targets=$(grep -E '^(reg_proxy|reg_route)=' "$rc" | cut -d= -f2-)
[ -n "$targets" ] || targets=$(grep -E '^reg_identity=' "$rc" | cut -d= -f2-)
elsewhere=$(echo "$targets" | grep -vE '(@|sips?:)(127\.0\.0\.1|localhost|\[::1\])([:;>]|$)')
if [ -z "$targets" ] || [ -n "$elsewhere" ]; then
  log "REGISTRATION=Refused reason=\"registrar not on loopback: ${elsewhere:-no proxy provisioned}\""
  exit 5
fi
accounts=$(grep -c '^reg_sendregister=1' "$rc")
if [ "$accounts" -eq 0 ]; then
  log "REGISTRATION=NotRequested (no account with reg_sendregister=1)"
  exit 0
fi
# The applied configuration without config-uri (no second fetch), with the network on.
grep -vE '^(config-uri|auto_net_state_mon)=' "$rc" > "$work/linphonerc.register"
rlog="$work/register.log"
start_client "$work/linphonerc.register" "$rlog"
end=$(( $(date +%s) + timeout_s ))
while [ "$(date +%s)" -lt "$end" ] && kill -0 "$client" 2>/dev/null; do
  done_count=$(grep -cE 'to \[LinphoneRegistration(Ok|Failed)\]' "$rlog" 2>/dev/null)
  [ "${done_count:-0}" -ge "$accounts" ] && break
  sleep 0.1
done
outcomes=$(grep -oE 'identity \[[^]]*\] moving from state \[[A-Za-z]+\] to \[LinphoneRegistration(Ok|Failed)\]' "$rlog" \
  | sed -E 's/identity \[([^]]*)\].* to \[LinphoneRegistration([A-Za-z]+)\]/\1=\2/' | sort -u | tr '\n' ' ')
sip_statuses=$(grep -E '^SIP/2\.0 [0-9]{3}' "$rlog" | tr -d '\r' | awk '{print $2}' | tr '\n' ' ')
stop_client
if echo "$outcomes" | grep -q '=Ok' && ! echo "$outcomes" | grep -q '=Failed'; then
  log "REGISTRATION=Ok accounts=\"$outcomes\" sip_responses=\"$sip_statuses\""
  exit 0
fi
log "REGISTRATION=Failed accounts=\"${outcomes:-none}\" sip_responses=\"$sip_statuses\""
exit 4
