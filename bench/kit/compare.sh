#!/usr/bin/env bash
# Measures the vdisk kit reading a 4 GiB disk holding 1 GiB of scattered
# data (the reference image of bench/nbd) from a `vdisk serve` host, and
# compares it with nbdcopy reading the same VMDK from qemu-nbd.
#
#   bash bench/kit/compare.sh [WORKDIR]
#
# Prints: nbdssl vs nbdcopy←qemu-nbd (plain and TLS), direct vs the local
# file, and 1..16 concurrent copies.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${1:-/dev/shm/vdisk-bench}
mkdir -p "$work"
for tool in qemu-img qemu-nbd nbdcopy; do
	command -v $tool >/dev/null || { echo "$tool is needed (apt-get install qemu-utils libnbd-bin)"; exit 1; }
done
go build -o "$work/vdisk" "$root/cmd/vdisk"
go build -o "$work/gen" "$root/bench/convert/gen"
go build -o "$work/kit" "$root/bench/kit"
cd "$work"
[ -f ref.raw ] || ./gen -o ref.raw -size $((4<<30)) -data $((1<<30))
[ -f ref.vmdk ] || qemu-img convert -f raw -O vmdk ref.raw ref.vmdk

export VDISK_PASSWORD=bench-password-123
rm -rf host && mkdir host
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT
VDISK_ADMIN_PASSWORD=$VDISK_PASSWORD ./vdisk serve --data-dir host/data --listen 127.0.0.1:18443 \
	--nbd-listen 127.0.0.1:18809 --plain-nbd-listen 127.0.0.1:18810 --log-level warn >host/serve.out 2>host/serve.log &
pids+=($!)
for _ in $(seq 50); do grep -q thumbprint host/serve.out 2>/dev/null && break; sleep 0.1; done
tp=$(awk '/^  certificate/ {print $4}' host/serve.out)
kit() { ./kit -server 127.0.0.1:18443 -thumbprint "$tp" "$@"; }
kit import ref.vmdk ref

# nbdcopy from qemu-nbd, plain and TLS (certificates as in bench/nbd).
pki="$work/pki"
if [ ! -f "$pki/server-cert.pem" ]; then
	mkdir -p "$pki"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
		-keyout "$pki/ca-key.pem" -out "$pki/ca-cert.pem" 2>/dev/null
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
		-keyout "$pki/server-key.pem" -out "$pki/server.csr" 2>/dev/null
	printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$pki/ext.cnf"
	openssl x509 -req -in "$pki/server.csr" -CA "$pki/ca-cert.pem" -CAkey "$pki/ca-key.pem" -CAcreateserial \
		-days 2 -extfile "$pki/ext.cnf" -out "$pki/server-cert.pem" 2>/dev/null
fi
qemu-nbd -t -r -f vmdk -e 16 -b 127.0.0.1 -p 18912 ref.vmdk & pids+=($!)
qemu-nbd -t -r -f vmdk -e 16 -b 127.0.0.1 -p 18914 --object "tls-creds-x509,id=tls0,dir=$pki,endpoint=server,verify-peer=off" \
	--tls-creds tls0 ref.vmdk & pids+=($!)
sleep 1
best() { # best of 3 wall-clock seconds of a command
	local b=""
	for _ in 1 2 3; do
		/usr/bin/time -f "%e" -o t.txt "$@" >/dev/null 2>&1
		t=$(cat t.txt)
		if [ -z "$b" ] || awk "BEGIN{exit !($t < $b)}"; then b=$t; fi
	done
	echo "$b"
}
secs() { # best of 3 of the kit's own timing (excludes process start and snapshot)
	local b=""
	for _ in 1 2 3; do
		t=$("$@" | awk '{for (i=1;i<=NF;i++) if ($i=="in") {sub("s","",$(i+1)); print $(i+1)}}')
		if [ -z "$b" ] || awk "BEGIN{exit !($t < $b)}"; then b=$t; fi
	done
	echo "$b"
}
q=$(best nbdcopy nbd://127.0.0.1:18912 null:)
qt=$(best nbdcopy "nbds://127.0.0.1:18914?tls-certificates=$pki" null:)
s=$(secs kit read nbdssl ref)
p=$(secs kit read nbd ref)
d=$(secs kit read direct ref)
# The direct mode reads the host's own file, so compare with reading that
# same file locally (the imported copy's grain order differs from
# qemu-img's ref.vmdk).
l=$(secs ./kit local host/data/disks/ref/ref-000000.vmdk)
lr=$(secs ./kit local ref.vmdk)
printf '%-44s %8s\n' "full read of ref (4 GiB, 1 GiB data)" seconds
printf '%-44s %8s\n' "nbdcopy <- qemu-nbd (plain)" "$q"
printf '%-44s %8s\n' "nbdcopy <- qemu-nbd (TLS)" "$qt"
printf '%-44s %8s  %5.2fx qemu-nbd plain, %5.2fx qemu-nbd TLS\n' "kit nbdssl" "$s" "$(awk "BEGIN{print $q/$s}")" "$(awk "BEGIN{print $qt/$s}")"
printf '%-44s %8s  %5.2fx qemu-nbd plain\n' "kit nbd (plain)" "$p" "$(awk "BEGIN{print $q/$p}")"
printf '%-44s %8s  %+5.1f%% vs the same file read locally\n' "kit direct" "$d" "$(awk "BEGIN{print ($d/$l-1)*100}")"
printf '%-44s %8s\n' "kit file (the host's file, locally)" "$l"
printf '%-44s %8s\n' "kit file (ref.vmdk as qemu-img wrote it)" "$lr"
echo
echo "concurrent full reads (aggregate):"
for n in 1 2 4 8 16; do
	kit parallel nbdssl ref $n
	kit parallel direct ref $n
done
rm -f t.txt
