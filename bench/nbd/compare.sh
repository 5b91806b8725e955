#!/usr/bin/env bash
# NBD reads against their peers and ceilings, in one run (issue 16):
# nbdcopy reads the reference disk (4 GiB virtual holding 1 GiB of
# scattered data) from
#   - qemu-nbd and `vdisk export`, each serving the sparse VMDK and the raw
#     equivalent, over a Unix socket, TCP and TLS;
#   - a `vdisk serve` host over TLS (a ticket's nbds:// URI to a VM disk
#     holding the same data);
# with the image (and the host's data directory) on ext4 and on tmpfs.
# Each case runs ROUNDS times, interleaved with the others; the best wall
# time is kept, and the server's CPU seconds per GiB of data (user+system
# from /proc/PID/stat around each copy, the lowest of the rounds) besides.
# Then the ratios against the targets:
#   - TLS: qemu-nbd over TLS / vdisk over TLS (export and host) >= 3;
#   - the server's TLS cost (its CPU per GiB over TLS less over plain TCP)
#     at most twice AES-GCM alone (BenchmarkAESGCMSeal on this CPU);
#   - plain: vdisk export of the sparse VMDK / qemu-nbd of the raw file
#     <= 1 (the raw file is the practical ceiling for this data).
#
#   bash bench/nbd/compare.sh [ROUNDS]
#
# VDISK_BENCH_EXT4 (default /tmp/vdisk-bench-nbd, a directory on ext4)
# and VDISK_BENCH_TMPFS (default /dev/shm/vdisk-bench-nbd) hold the images.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
rounds=${1:-3}
ext4=${VDISK_BENCH_EXT4:-/tmp/vdisk-bench-nbd}
tmpfs=${VDISK_BENCH_TMPFS:-/dev/shm/vdisk-bench-nbd}
for tool in qemu-img qemu-nbd nbdcopy openssl; do
	command -v $tool >/dev/null || { echo "$tool is needed (apt-get install qemu-utils libnbd-bin openssl)"; exit 1; }
done
[ -x /usr/bin/time ] || { echo "/usr/bin/time is needed (apt-get install time)"; exit 1; }
mkdir -p "$ext4" "$tmpfs"
bin=$tmpfs/bin
mkdir -p "$bin"
(cd "$root" && go build -o "$bin/vdisk" ./cmd/vdisk && go build -o "$bin/gen" ./bench/convert/gen)
vdisk=$bin/vdisk
data_gib=1 # the reference disk's data, what "per GiB" divides by

echo "== AES-GCM alone on this CPU (go test -bench AESGCMSeal ./nbd)"
aes=$(cd "$root" && go test -run '^$' -bench 'AESGCMSeal' -benchtime 1s -count 3 ./nbd 2>/dev/null | grep cpu-s/GiB)
echo "$aes" | sed 's/^/  /'
aes128=$(echo "$aes" | awk '/AES-128/ {v=$(NF-1); if (b=="" || v<b) b=v} END {print b}')
aes256=$(echo "$aes" | awk '/AES-256/ {v=$(NF-1); if (b=="" || v<b) b=v} END {print b}')

pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

declare -A pid uri
tk=$(getconf CLK_TCK)
port=21000

# setup FS DIR: the images, the certificates, every server on them.
setup() {
	local fs=$1 d=$2
	cd "$d"
	if [ ! -f ref.raw ]; then
		if [ -f "$tmpfs/ref.raw" ] && [ "$d" != "$tmpfs" ]; then cp --sparse=always "$tmpfs/ref.raw" ref.raw
		else "$bin/gen" -o ref.raw -size $((4 << 30)) -data $((data_gib << 30)); fi
	fi
	[ -f ref.vmdk ] || qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse ref.raw ref.vmdk
	cat ref.raw ref.vmdk >/dev/null # into the page cache
	local pki=$d/pki
	mkdir -p "$pki"
	if [ ! -f "$pki/server-cert.pem" ]; then
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
			-keyout "$pki/ca-key.pem" -out "$pki/ca-cert.pem" 2>/dev/null
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
			-keyout "$pki/server-key.pem" -out "$pki/server.csr" 2>/dev/null
		printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$pki/ext.cnf"
		openssl x509 -req -in "$pki/server.csr" -CA "$pki/ca-cert.pem" -CAkey "$pki/ca-key.pem" -CAcreateserial \
			-days 2 -extfile "$pki/ext.cnf" -out "$pki/server-cert.pem" 2>/dev/null
	fi
	local tlsq="--object tls-creds-x509,id=tls0,dir=$pki,endpoint=server,verify-peer=off --tls-creds tls0"
	local tlsv="--tls-cert $pki/server-cert.pem --tls-key $pki/server-key.pem"
	for img in vmdk raw; do
		rm -f "q-$img.sock" "v-$img.sock"
		qemu-nbd -t -r -f $img -e 16 -k "$d/q-$img.sock" ref.$img & pid[$fs,qemu,$img,unix]=$!
		uri[$fs,qemu,$img,unix]="nbd+unix:///?socket=$d/q-$img.sock"
		"$vdisk" export --read-only -f $img --socket "$d/v-$img.sock" ref.$img 2>/dev/null & pid[$fs,vdisk,$img,unix]=$!
		uri[$fs,vdisk,$img,unix]="nbd+unix:///?socket=$d/v-$img.sock"
		port=$((port + 1))
		qemu-nbd -t -r -f $img -e 16 -b 127.0.0.1 -p $port ref.$img & pid[$fs,qemu,$img,tcp]=$!
		uri[$fs,qemu,$img,tcp]="nbd://127.0.0.1:$port"
		port=$((port + 1))
		"$vdisk" export --read-only -f $img --bind 127.0.0.1:$port ref.$img 2>/dev/null & pid[$fs,vdisk,$img,tcp]=$!
		uri[$fs,vdisk,$img,tcp]="nbd://127.0.0.1:$port"
		port=$((port + 1))
		# shellcheck disable=SC2086
		qemu-nbd -t -r -f $img -e 16 -b 127.0.0.1 -p $port $tlsq ref.$img & pid[$fs,qemu,$img,tls]=$!
		uri[$fs,qemu,$img,tls]="nbds://127.0.0.1:$port?tls-certificates=$pki"
		port=$((port + 1))
		# shellcheck disable=SC2086
		"$vdisk" export --read-only -f $img --bind 127.0.0.1:$port $tlsv ref.$img 2>/dev/null & pid[$fs,vdisk,$img,tls]=$!
		uri[$fs,vdisk,$img,tls]="nbds://127.0.0.1:$port?tls-certificates=$pki"
	done
	pids+=("${pid[$fs,qemu,vmdk,unix]}" "${pid[$fs,vdisk,vmdk,unix]}" "${pid[$fs,qemu,vmdk,tcp]}" "${pid[$fs,vdisk,vmdk,tcp]}"
		"${pid[$fs,qemu,vmdk,tls]}" "${pid[$fs,vdisk,vmdk,tls]}" "${pid[$fs,qemu,raw,unix]}" "${pid[$fs,vdisk,raw,unix]}"
		"${pid[$fs,qemu,raw,tcp]}" "${pid[$fs,vdisk,raw,tcp]}" "${pid[$fs,qemu,raw,tls]}" "${pid[$fs,vdisk,raw,tls]}")

	# A host whose data directory is on this filesystem: the reference
	# disk in a VM's disk, read through tickets over TLS.
	rm -rf host && mkdir -m 700 host
	printf 'bench password' >host/pw
	local api=$((port + 1)) nbdp=$((port + 2))
	port=$((port + 2))
	"$vdisk" serve --data-dir host/data --listen 127.0.0.1:$api --nbd-listen 127.0.0.1:$nbdp \
		--admin-password-file host/pw >host/log 2>&1 & pid[$fs,host]=$!
	pids+=("${pid[$fs,host]}")
	for _ in $(seq 100); do [ -f host/data/tls/server.crt ] && break; sleep 0.1; done
	sleep 1
	local tp
	tp=$(openssl x509 -in host/data/tls/server.crt -noout -fingerprint -sha256 | cut -d= -f2)
	mkdir -p host/ca && cp host/data/tls/server.crt host/ca/ca-cert.pem
	(
		export VDISK_CONFIG_DIR=$d/host/cfg VDISK_PASSWORD='bench password'
		"$vdisk" login --server 127.0.0.1:$api --thumbprint "$tp" --user admin >/dev/null
		"$vdisk" vm create bench >/dev/null
		"$vdisk" vm add-disk bench scsi0:0 4G >/dev/null
		"$vdisk" convert -n -f vmdk ref.vmdk vdisk:vm/bench/scsi0:0
	)
}

# ticket FS: a fresh ticket's URI on that filesystem's host.
ticket() {
	local d=$2 u
	u=$(cd "$d" && VDISK_CONFIG_DIR=$d/host/cfg VDISK_PASSWORD='bench password' \
		"$vdisk" ticket create --vm bench --key scsi0:0 --mode ro | grep -o 'nbds://[^ ]*')
	echo "$u?tls-certificates=$d/host/ca"
}

# measure KEY PID URI: one copy; keeps the best wall time, client CPU and
# server CPU of KEY.
declare -A wall scpu ccpu
measure() {
	local key=$1 p=$2 u=$3 s0 s1 w c s
	s0=$(awk '{print $14+$15}' "/proc/$p/stat")
	/usr/bin/time -f "%e %U %S" -o "$tmpfs/t.txt" nbdcopy "$u" null:
	s1=$(awk '{print $14+$15}' "/proc/$p/stat")
	read -r w cu cs <"$tmpfs/t.txt"
	c=$(awk "BEGIN{print $cu + $cs}")
	s=$(awk "BEGIN{print ($s1 - $s0) / $tk / $data_gib}")
	if [ -z "${wall[$key]:-}" ] || awk "BEGIN{exit !($w < ${wall[$key]})}"; then wall[$key]=$w; fi
	if [ -z "${scpu[$key]:-}" ] || awk "BEGIN{exit !($s < ${scpu[$key]})}"; then scpu[$key]=$s; fi
	if [ -z "${ccpu[$key]:-}" ] || awk "BEGIN{exit !($c < ${ccpu[$key]})}"; then ccpu[$key]=$c; fi
}

setup ext4 "$ext4"
setup tmpfs "$tmpfs"
sleep 1
for r in $(seq "$rounds"); do
	echo "== round $r of $rounds"
	for fs in ext4 tmpfs; do
		d=$ext4
		[ $fs = tmpfs ] && d=$tmpfs
		for kind in unix tcp tls; do
			for img in vmdk raw; do
				for srv in qemu vdisk; do
					measure "$fs,$srv,$img,$kind" "${pid[$fs,$srv,$img,$kind]}" "${uri[$fs,$srv,$img,$kind]}"
				done
			done
		done
		measure "$fs,host" "${pid[$fs,host]}" "$(ticket $fs "$d")"
	done
done

# The host logs each connection's TLS version and cipher suite (JSON).
cipher=$(grep -o '"cipher":"[A-Z0-9_]*"' "$tmpfs/host/log" | sort | uniq -c | sort -rn | head -1 | sed 's/.*:"\(.*\)"/\1/' || true)
tlsver=$(grep -o '"tls_version":"[^"]*"' "$tmpfs/host/log" | sort -u | head -1 | sed 's/.*:"\(.*\)"/\1/' || true)
echo
echo "nbdcopy of the reference disk (1 GiB of data): best wall s / server CPU s per GiB / nbdcopy CPU s, of $rounds rounds"
printf '%-6s %-5s %-22s %-22s %-22s %-22s\n' fs via "qemu-nbd vmdk" "qemu-nbd raw" "vdisk export vmdk" "vdisk export raw"
cell() { printf '%5.2f / %4.2f / %4.2f' "${wall[$1]}" "${scpu[$1]}" "${ccpu[$1]}"; }
for fs in ext4 tmpfs; do
	for kind in unix tcp tls; do
		printf '%-6s %-5s %-22s %-22s %-22s %-22s\n' $fs $kind "$(cell $fs,qemu,vmdk,$kind)" "$(cell $fs,qemu,raw,$kind)" \
			"$(cell $fs,vdisk,vmdk,$kind)" "$(cell $fs,vdisk,raw,$kind)"
	done
	printf '%-6s %-5s %-22s (vdisk serve, a ticket to a VM disk)\n' $fs "host" "$(cell $fs,host)"
done
echo "negotiated with nbdcopy (GnuTLS): $tlsver $cipher; AES-GCM alone: AES-128 $aes128, AES-256 $aes256 CPU s per GiB"

echo
echo "targets (ratio, target, met)"
verdict() { awk "BEGIN{v=$1; printf \"%-58s %6.2f  %-8s %s\n\", \"$2\", v, \"$3\", ((\"$3\" ~ /^>=/ && v >= substr(\"$3\",3)+0) || (\"$3\" ~ /^<=/ && v <= substr(\"$3\",3)+0)) ? \"yes\" : \"NO\"}"; }
aes=$aes128
case "$cipher" in *AES_256*) aes=$aes256 ;; esac
for fs in ext4 tmpfs; do
	verdict "${wall[$fs,qemu,vmdk,tls]} / ${wall[$fs,vdisk,vmdk,tls]}" "$fs: qemu-nbd TLS / vdisk export TLS (wall)" ">=3"
	verdict "${wall[$fs,qemu,vmdk,tls]} / ${wall[$fs,host]}" "$fs: qemu-nbd TLS / host TLS (wall)" ">=3"
	verdict "(${scpu[$fs,vdisk,vmdk,tls]} - ${scpu[$fs,vdisk,vmdk,tcp]}) / $aes" "$fs: export's TLS cost (TLS - TCP server CPU) / AES-GCM" "<=2"
	verdict "(${scpu[$fs,host]} - ${scpu[$fs,vdisk,vmdk,tcp]}) / $aes" "$fs: host's TLS cost (host - export TCP server CPU) / AES-GCM" "<=2"
	verdict "${scpu[$fs,vdisk,vmdk,tls]} / $aes" "$fs: export's whole server CPU over TLS / AES-GCM" "<=2"
	for kind in unix tcp; do
		verdict "${wall[$fs,vdisk,vmdk,$kind]} / ${wall[$fs,qemu,raw,$kind]}" "$fs: vdisk export vmdk / qemu-nbd raw, $kind (wall)" "<=1"
		verdict "${scpu[$fs,vdisk,vmdk,$kind]} / ${scpu[$fs,qemu,raw,$kind]}" "$fs: vdisk export vmdk / qemu-nbd raw, $kind (server CPU)" "<=1"
	done
done
rm -f "$tmpfs/t.txt"

# The client side: vdisk's client against nbdcopy, both reading the raw
# reference from qemu-nbd (tmpfs, Unix socket) into a file.
cd "$tmpfs"
bestcmd() {
	local b=""
	for _ in $(seq "$rounds"); do
		rm -f out.raw
		/usr/bin/time -f "%e" -o t.txt "$@" >/dev/null 2>&1
		t=$(cat t.txt)
		if [ -z "$b" ] || awk "BEGIN{exit !($t < $b)}"; then b=$t; fi
	done
	echo "$b"
}
echo
n=$(bestcmd nbdcopy "${uri[tmpfs,qemu,raw,unix]}" out.raw)
v=$(bestcmd "$vdisk" convert -t unsafe -O raw "${uri[tmpfs,qemu,raw,unix]}" out.raw)
printf '%-34s %10s %10s %8s\n' "reading qemu-nbd (raw) into a file" nbdcopy vdisk ratio
printf '%-34s %9ss %9ss %7sx\n' "" "$n" "$v" "$(awk "BEGIN{printf \"%.2f\", $n/$v}")"
rm -f out.raw t.txt
