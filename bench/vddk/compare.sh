#!/usr/bin/env bash
# Compares reading a disk through nbdkit's VDDK plugin over vdisk's
# libvixDiskLib with reading it through `vdisk export`: nbdcopy reads the
# reference disk (4 GiB virtual holding 1 GiB of scattered random data,
# monolithicSparse) from a local file, and from a vdisk host over nbdssl.
# Each run reads the disk through vdisk and through the plugin in three
# pairings (below: nbdkit's default, one connection each, and four
# connections each through nbdkit's multi-conn filter) and prints each
# ratio (plugin time / vdisk time) against the target, 1.3. It also writes
# the raw reference into a new local VMDK both ways (restore direction).
#
#   bash bench/vddk/compare.sh [WORKDIR]      (RUNS=N for other than 3 runs)
#
# Besides the wall time, each side's CPU time is printed (user+sys of the
# client process tree plus the serving process's share, from /proc): on a
# machine shared with other work it varies less than the wall time.
#
# Both remote reads use the session of one `vdisk login`: the vdisk side
# takes a ticket with it, the plugin passes it as VDDK's session cookie
# (cookie=, VIXDISKLIB_CRED_SESSIONID). A password instead makes the
# plugin log in at ConnectEx, which costs the host a password hash
# (PBKDF2) per connection; that one-time cost is printed separately.
#
# Needs gcc, nbdkit, nbdkit-plugin-dev, qemu-img, nbdcopy, nbdinfo,
# openssl, and nbdkit's VDDK plugin sources at ../shared/peers/nbdkit-vddk
# (or $VDISK_SHARED/peers/nbdkit-vddk).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${1:-/dev/shm/vdisk-bench-vddk}
runs=${RUNS:-3}
target=1.3
shared=${VDISK_SHARED:-}
for d in "$root/../shared" "$root/../../shared"; do
	[ -n "$shared" ] || { [ -x "$d/peers/nbdkit-vddk/build.sh" ] && shared=$d; } || true
done
[ -n "$shared" ] || { echo "nbdkit-vddk sources not found; set VDISK_SHARED"; exit 1; }
for tool in gcc nbdkit qemu-img nbdcopy nbdinfo openssl; do
	command -v $tool >/dev/null || { echo "$tool is needed"; exit 1; }
done
[ -x /usr/bin/time ] || { echo "/usr/bin/time is needed (apt-get install time)"; exit 1; }
mkdir -p "$work"
cd "$root"
go build -o "$work/vdisk" ./cmd/vdisk
go build -o "$work/gen" ./bench/convert/gen
go run ./cmd/libvixdisklib/install "$work/vddk" >/dev/null
bash "$shared/peers/nbdkit-vddk/build.sh" "$work/plugin" >/dev/null
plugin=$work/plugin/nbdkit-vddk-plugin.so
cd "$work"
[ -f ref.raw ] || ./gen -o ref.raw -size $((4<<30)) -data $((1<<30))
[ -f ref.vmdk ] || qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse ref.raw ref.vmdk

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -f v.sock t.txt; }
trap cleanup EXIT

hz=$(getconf CLK_TCK)
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; } # user+sys of a process, in clock ticks

# timed SERVER_PID CMD...: runs CMD and prints "wall cpu", cpu being CMD's
# user+sys (children included) plus what SERVER_PID used meanwhile.
timed() {
	local srv=$1 s0 s1 e u s
	shift
	s0=$(ticks "$srv")
	/usr/bin/time -f "%e %U %S" -o t.txt "$@" >/dev/null 2>&1
	s1=$(ticks "$srv")
	read -r e u s <t.txt
	echo "$e $(awk "BEGIN{printf \"%.2f\", $u + $s + ($s1 - $s0) / $hz}")"
}

# Three comparisons per run, each of the plugin against vdisk:
#   nbdkit default   nbdkit's VDDK plugin as it comes: it does not offer
#                    multi-conn (can_multi_conn is false), so nbdcopy opens
#                    one connection; vdisk's export offers multi-conn, and
#                    nbdcopy opens four.
#   1 connection     both read over one connection (nbdcopy --connections=1
#                    against vdisk): the same read, the library's cost alone.
#   multi-conn       the plugin behind nbdkit's own multi-conn filter, so that
#                    nbdcopy opens four connections to it too, each with its
#                    own ConnectEx and Open: the same read, four connections.
# The target applies to the last two, where both sides make the same read;
# the first is printed so that nbdkit's default is not hidden. As a gauge
# of the single-connection ceiling, the local case also reads the raw
# reference through nbdkit's own file plugin over one and four connections.
printf '%-12s %-16s %4s %10s %10s %7s %-5s %9s %9s %7s\n' "nbdcopy of" comparison run "vdisk (s)" "plugin (s)" ratio "<=$target" \
	"vdisk cpu" "plugin cpu" ratio
worst=ok
summary=()
declare -A bv bp ratios
# report CASE COMPARISON RUN VDISK PLUGIN [info]: one line; VDISK and
# PLUGIN are "wall cpu". With "info" the line is not held to the target.
report() {
	local k="$1/$2" ew ec pw pc r ok
	read -r ew ec <<<"$4"
	read -r pw pc <<<"$5"
	if [ -z "${bv[$k]:-}" ] || awk "BEGIN{exit !($ew < ${bv[$k]})}"; then bv[$k]=$ew; fi
	if [ -z "${bp[$k]:-}" ] || awk "BEGIN{exit !($pw < ${bp[$k]})}"; then bp[$k]=$pw; fi
	r=$(awk "BEGIN{printf \"%.2f\", $pw / ($ew > 0 ? $ew : 0.001)}")
	ratios[$k]="${ratios[$k]:-} $r"
	ok=$(awk "BEGIN{print ($r <= $target) ? \"yes\" : \"NO\"}")
	if [ "${6:-}" = info ]; then
		ok=info
	elif [ "$ok" != yes ]; then
		worst=over
	fi
	printf '%-12s %-16s %4s %10s %10s %6sx %-5s %9s %9s %6sx\n' "$1" "$2" "$3" "$ew" "$pw" "$r" "$ok" "$ec" "$pc" \
		"$(awk "BEGIN{printf \"%.2f\", $pc / ($ec > 0 ? $ec : 0.001)}")"
}

# best CASE COMPARISON...: the fastest runs of each comparison's two sides
# and their ratio, and the median of the runs' own ratios.
best() {
	local c k med
	for c in "${@:2}"; do
		k="$1/$c"
		med=$(tr ' ' '\n' <<<"${ratios[$k]}" | sed '/^$/d' | sort -n | awk '{a[NR]=$1} END{printf "%.2f", NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')
		summary+=("$(printf '%-12s %-16s fastest of %s: vdisk %ss, plugin %ss, ratio %sx; median run ratio %sx' "$1" "$c" "$runs" "${bv[$k]}" "${bp[$k]}" \
			"$(awk "BEGIN{printf \"%.2f\", ${bp[$k]} / (${bv[$k]} > 0 ? ${bv[$k]} : 0.001)}")" "$med")")
	done
}

# Local file.
./vdisk export --read-only --socket v.sock ref.vmdk 2>/dev/null & epid=$!; pids+=($epid)
for _ in $(seq 50); do [ -S v.sock ] && break; sleep 0.1; done
local_plugin=(nbdkit -r -U - "$plugin" libdir="$work/vddk" file="$work/ref.vmdk")
local_mc=(nbdkit -r -U - --filter=multi-conn "$plugin" libdir="$work/vddk" file="$work/ref.vmdk")
for i in $(seq "$runs"); do
	e4=$(timed "$epid" nbdcopy "nbd+unix:///?socket=$work/v.sock" null:)
	e1=$(timed "$epid" nbdcopy --connections=1 "nbd+unix:///?socket=$work/v.sock" null:)
	p1=$(timed "$epid" "${local_plugin[@]}" --run 'nbdcopy "$uri" null:')
	pm=$(timed "$epid" "${local_mc[@]}" --run 'nbdcopy "$uri" null:')
	f1=$(timed "$epid" nbdkit -r -U - file ref.raw --run 'nbdcopy --connections=1 "$uri" null:')
	f4=$(timed "$epid" nbdkit -r -U - file ref.raw --run 'nbdcopy "$uri" null:')
	report "local file" "nbdkit default" "$i" "$e4" "$p1" info
	report "local file" "1 connection" "$i" "$e1" "$p1"
	report "local file" "multi-conn" "$i" "$e4" "$pm"
	read -r f1w _ <<<"$f1"
	read -r f4w _ <<<"$f4"
	printf '%-12s %-16s %4s   nbdkit file plugin, raw: %ss over 1 connection, %ss over 4\n' "local file" gauge "$i" "$f1w" "$f4w"
done
best "local file" "nbdkit default" "1 connection" "multi-conn"

# A host: the reference disk in a VM's disk, read over nbdssl.
rm -rf host && mkdir -m 700 host
printf 'bench password' >pw
./vdisk serve --data-dir host/data --listen 127.0.0.1:18443 --nbd-listen 127.0.0.1:18809 \
	--admin-password-file pw >host/log 2>&1 & hpid=$!; pids+=($hpid)
for _ in $(seq 50); do [ -f host/data/tls/server.crt ] && break; sleep 0.2; done
sleep 1
kill -0 "$hpid" 2>/dev/null || { echo "vdisk serve did not start (is 127.0.0.1:18443 or :18809 taken?):"; cat host/log; exit 1; }
tp=$(openssl x509 -in host/data/tls/server.crt -noout -fingerprint -sha256 | cut -d= -f2)
tp1=$(openssl x509 -in host/data/tls/server.crt -noout -fingerprint -sha1 | cut -d= -f2)
export VDISK_CONFIG_DIR=$work/host/cfg VDISK_PASSWORD='bench password'
./vdisk login --server 127.0.0.1:18443 --thumbprint "$tp" --user admin >/dev/null
./vdisk vm create bench >/dev/null
./vdisk vm add-disk bench scsi0:0 4G >/dev/null
./vdisk convert -n -f vmdk ref.vmdk vdisk:vm/bench/scsi0:0
dsp=$(./vdisk vm show --output=json bench 2>/dev/null | sed -n 's/.*"datastorePath": *"\([^"]*\)".*/\1/p' | head -1)
moref=$(./vdisk vm show --output=json bench 2>/dev/null | sed -n 's/.*"moref": *"\([^"]*\)".*/\1/p' | head -1)
token=$(sed -n 's/.*"token": *"\([^"]*\)".*/\1/p' "$VDISK_CONFIG_DIR/login.json")
mkdir -p ca && cp host/data/tls/server.crt ca/ca-cert.pem
remote=(server=127.0.0.1 port=18443 user=admin password=+"$work/pw" thumbprint="$tp1" vm=moref="$moref" file="$dsp" transports=nbdssl)
for i in $(seq "$runs"); do
	e4=$(timed "$hpid" bash -c "nbdcopy \"\$(./vdisk ticket create --vm bench --key scsi0:0 --mode ro | grep -o 'nbds://[^ ]*')?tls-certificates=$work/ca\" null:")
	e1=$(timed "$hpid" bash -c "nbdcopy --connections=1 \"\$(./vdisk ticket create --vm bench --key scsi0:0 --mode ro | grep -o 'nbds://[^ ]*')?tls-certificates=$work/ca\" null:")
	p1=$(timed "$hpid" nbdkit -r -U - "$plugin" libdir="$work/vddk" "${remote[@]}" cookie="$token" --run 'nbdcopy "$uri" null:')
	pm=$(timed "$hpid" nbdkit -r -U - --filter=multi-conn "$plugin" libdir="$work/vddk" "${remote[@]}" cookie="$token" --run 'nbdcopy "$uri" null:')
	report "host, nbdssl" "nbdkit default" "$i" "$e4" "$p1" info
	report "host, nbdssl" "1 connection" "$i" "$e1" "$p1"
	report "host, nbdssl" "multi-conn" "$i" "$e4" "$pm"
done
best "host, nbdssl" "nbdkit default" "1 connection" "multi-conn"

# Writing: nbdcopy of the raw reference (4 GiB holding 1 GiB of data) into
# a new monolithicSparse VMDK through the plugin, against the same copy
# into `vdisk export` over one connection (a writable local file takes one
# opener, so the plugin cannot have four), and over four as information.
# The sizes show that the copies stay thin: nbdcopy zeroes the holes, which
# the plugin passes on as writes of zeros.
newdisk() { rm -f "$1"; qemu-img create -q -f vmdk "$1" 4G; }
# exportw IMG: serves IMG writable on w.sock, the server's pid in wpid.
exportw() {
	rm -f w.sock
	./vdisk export --socket w.sock "$1" 2>/dev/null &
	wpid=$!
	pids+=("$wpid")
	for _ in $(seq 50); do [ -S w.sock ] && break; sleep 0.1; done
}
for i in $(seq "$runs"); do
	newdisk we1.vmdk
	exportw we1.vmdk
	e1=$(timed "$wpid" nbdcopy --connections=1 ref.raw "nbd+unix:///?socket=$work/w.sock")
	kill "$wpid"; wait "$wpid" 2>/dev/null || true
	newdisk we4.vmdk
	exportw we4.vmdk
	e4=$(timed "$wpid" nbdcopy ref.raw "nbd+unix:///?socket=$work/w.sock")
	kill "$wpid"; wait "$wpid" 2>/dev/null || true
	newdisk wp.vmdk
	p1=$(timed "$epid" nbdkit -U - "$plugin" libdir="$work/vddk" file="$work/wp.vmdk" --run 'nbdcopy ref.raw "$uri"')
	report "local write" "1 connection" "$i" "$e1" "$p1"
	report "local write" "nbdkit default" "$i" "$e4" "$p1" info
	printf '%-12s %-16s %4s   allocated: vdisk %s, plugin %s (qemu-img map)\n' "local write" sizes "$i" \
		"$(qemu-img map --output=json we1.vmdk | awk -F'"length": ' '/"data": true/{split($2,a,","); n+=a[1]} END{printf "%.0f MiB", n/1048576}')" \
		"$(qemu-img map --output=json wp.vmdk | awk -F'"length": ' '/"data": true/{split($2,a,","); n+=a[1]} END{printf "%.0f MiB", n/1048576}')"
	qemu-img compare -q -f raw -F vmdk ref.raw wp.vmdk || { echo "the plugin's copy differs from the reference"; exit 1; }
done
rm -f we1.vmdk we4.vmdk wp.vmdk w.sock
best "local write" "1 connection" "nbdkit default"

# What a password login adds: nbdinfo through the plugin with a password
# and with the session cookie, the fastest of three each.
fastest() {
	local b="" t
	for _ in 1 2 3; do
		read -r t _ <<<"$(timed "$hpid" "$@")"
		if [ -z "$b" ] || awk "BEGIN{exit !($t < $b)}"; then b=$t; fi
	done
	echo "$b"
}
pwd_t=$(fastest nbdkit -r -U - "$plugin" libdir="$work/vddk" "${remote[@]}" --run 'nbdinfo --size "$uri"')
ck_t=$(fastest nbdkit -r -U - "$plugin" libdir="$work/vddk" "${remote[@]}" cookie="$token" --run 'nbdinfo --size "$uri"')
printf '%s\n' "${summary[@]}"
echo "plugin connect+open+info: ${ck_t}s with the session cookie, ${pwd_t}s with a password (a login per ConnectEx)"
[ "$worst" = ok ] && echo "every run of the same read within ${target}x" || echo "some runs of the same read over ${target}x"
