#!/usr/bin/env bash
# Compares `vdisk export` with qemu-nbd serving the same image: nbdcopy
# reads the reference VMDK (4 GiB holding 1 GiB of scattered data) from
# each over a Unix socket and over TCP, and the ratio is printed.
#
#   bash bench/nbd/compare.sh [WORKDIR]
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
cd "$work"
[ -f ref.raw ] || ./gen -o ref.raw -size $((4<<30)) -data $((1<<30))
[ -f ref.vmdk ] || qemu-img convert -f raw -O vmdk ref.raw ref.vmdk

# A CA and a server certificate for the TLS runs (file names as GnuTLS
# peers expect them).
pki="$work/pki"
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

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -f v.sock q.sock; }
trap cleanup EXIT
./vdisk export --read-only --socket v.sock ref.vmdk 2>/dev/null & pids+=($!)
./vdisk export --read-only --bind 127.0.0.1:10911 ref.vmdk 2>/dev/null & pids+=($!)
qemu-nbd -t -r -f vmdk -e 16 -k "$work/q.sock" ref.vmdk & pids+=($!)
qemu-nbd -t -r -f vmdk -e 16 -b 127.0.0.1 -p 10912 ref.vmdk & pids+=($!)
./vdisk export --read-only --bind 127.0.0.1:10913 --tls-cert "$pki/server-cert.pem" --tls-key "$pki/server-key.pem" ref.vmdk 2>/dev/null & pids+=($!)
qemu-nbd -t -r -f vmdk -e 16 -b 127.0.0.1 -p 10914 --object "tls-creds-x509,id=tls0,dir=$pki,endpoint=server,verify-peer=off" \
	--tls-creds tls0 ref.vmdk & pids+=($!)
sleep 1

best() {
	local b=""
	for _ in 1 2 3; do
		/usr/bin/time -f "%e" -o t.txt nbdcopy "$1" null:
		t=$(cat t.txt)
		if [ -z "$b" ] || awk "BEGIN{exit !($t < $b)}"; then b=$t; fi
	done
	echo "$b"
}
printf '%-34s %10s %10s %8s\n' "nbdcopy reading ref.vmdk via" qemu-nbd vdisk ratio
for kind in unix tcp tls; do
	case $kind in
	unix) q=$(best "nbd+unix:///?socket=$work/q.sock"); v=$(best "nbd+unix:///?socket=$work/v.sock") ;;
	tcp) q=$(best "nbd://127.0.0.1:10912"); v=$(best "nbd://127.0.0.1:10911") ;;
	tls) q=$(best "nbds://127.0.0.1:10914?tls-certificates=$pki"); v=$(best "nbds://127.0.0.1:10913?tls-certificates=$pki") ;;
	esac
	printf '%-34s %9ss %9ss %7sx\n' "$kind" "$q" "$v" "$(awk "BEGIN{printf \"%.2f\", $q/$v}")"
	eval "v_$kind=$v"
done
echo "vdisk TLS cost over plain TCP: $(awk "BEGIN{printf \"%.0f%%\", ($v_tls/$v_tcp - 1)*100}")"
rm -f t.txt

# The client side: vdisk's client against nbdcopy, both reading the raw
# reference from qemu-nbd into a file.
qemu-nbd -t -r -f raw -e 16 -k "$work/qr.sock" ref.raw & pids+=($!)
sleep 1
bestcmd() {
	local b=""
	for _ in 1 2 3; do
		rm -f out.raw
		/usr/bin/time -f "%e" -o t.txt "$@" >/dev/null 2>&1
		t=$(cat t.txt)
		if [ -z "$b" ] || awk "BEGIN{exit !($t < $b)}"; then b=$t; fi
	done
	echo "$b"
}
n=$(bestcmd nbdcopy "nbd+unix:///?socket=$work/qr.sock" out.raw)
v=$(bestcmd ./vdisk convert -t unsafe -O raw "nbd+unix:///?socket=$work/qr.sock" out.raw)
printf '%-34s %10s %10s %8s\n' "reading qemu-nbd (raw) into a file" nbdcopy vdisk ratio
printf '%-34s %9ss %9ss %7sx\n' "" "$n" "$v" "$(awk "BEGIN{printf \"%.2f\", $n/$v}")"
rm -f out.raw t.txt qr.sock
