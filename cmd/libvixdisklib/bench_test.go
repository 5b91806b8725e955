package main

import (
	"bytes"
	"context"
	"flag"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
	"unsafe"

	"github.com/vdisk-project/vdisk"
	"github.com/vdisk-project/vdisk/format/vmdk"
	"github.com/vdisk-project/vdisk/server/servertest"
)

// The data path as nbdkit's VDDK plugin drives it: ReadAsync requests of
// 256 KiB (nbdcopy's request size) into C memory with a C completion
// callback, a batch of them in flight, then Wait. Compare runs with
// benchstat; bench/vddk/compare.sh measures the whole plugin against
// vdisk export.
const (
	benchRequest = 256 << 10
	benchDepth   = 16 // nbdkit's default threads per connection
	benchSize    = 64 << 20
)

// benchData is the disk's bytes: random, so that nothing reads as a hole.
func benchData() []byte {
	b := make([]byte, benchSize)
	r := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < len(b); i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// benchLocal makes a monolithicSparse VMDK holding data and opens it
// through the exported functions.
func benchLocal(b testing.TB, data []byte) (conn, h uintptr) {
	b.Helper()
	path := filepath.Join(b.TempDir(), "bench.vmdk")
	d, err := vmdk.Create(context.Background(), path, int64(len(data)), &vmdk.CreateOptions{Subformat: vmdk.MonolithicSparse})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := d.WriteAt(data, 0); err != nil {
		b.Fatal(err)
	}
	if err := d.Close(); err != nil {
		b.Fatal(err)
	}
	conn, e := cConnect("", 0, "", "", "", "", "")
	if e != vixOK {
		b.Fatalf("ConnectEx: %d", e)
	}
	h, e = cOpen(conn, path)
	if e != vixOK {
		b.Fatalf("Open: %d", e)
	}
	return conn, h
}

// benchRemote puts data in a host's disk and opens it over nbdssl through
// the exported functions.
func benchRemote(b testing.TB, data []byte) (conn, h uintptr) {
	b.Helper()
	host := servertest.New(b, nil)
	ctx := context.Background()
	if _, err := host.Store().CreateVM("bench"); err != nil {
		b.Fatal(err)
	}
	c, err := vdisk.Connect(ctx, vdisk.ConnectParams{Server: host.API, User: "admin", Password: servertest.Password, Thumbprint: host.Thumbprint})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	spec := vdisk.Spec{VM: "bench", Key: "scsi0:0"}
	if err := c.Create(ctx, spec, vdisk.CreateParams{Capacity: int64(len(data))}); err != nil {
		b.Fatal(err)
	}
	d, err := c.Open(ctx, spec, 0)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := d.WriteAt(data, 0); err != nil {
		b.Fatal(err)
	}
	if err := d.Close(); err != nil {
		b.Fatal(err)
	}
	vm, err := c.VM(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	name, portStr, _ := net.SplitHostPort(host.API)
	port, _ := strconv.Atoi(portStr)
	conn, e := cConnect(name, uint32(port), "admin", servertest.Password, host.Thumbprint, "moref="+vm.MoRef, "nbdssl")
	if e != vixOK {
		b.Fatalf("ConnectEx: %d", e)
	}
	h, e = cOpen(conn, vm.Disks[0].DatastorePath)
	if e != vixOK {
		b.Fatalf("Open: %d", e)
	}
	return conn, h
}

// benchOpeners open the benchmark disk locally and over nbdssl.
var benchOpeners = []struct {
	name string
	open func(testing.TB, []byte) (uintptr, uintptr)
}{
	{"local", benchLocal},
	{"nbdssl", benchRemote},
}

func BenchmarkReadAsync(b *testing.B) {
	data := benchData()
	for _, tc := range benchOpeners {
		b.Run(tc.name, func(b *testing.B) {
			conn, h := tc.open(b, data)
			defer cDisconnect(conn)
			defer cClose(h)
			bufs := cMalloc(benchDepth * benchRequest)
			defer cFree(bufs)
			cnt := newCCounter()
			defer cnt.free()
			const sectors = benchRequest / 512
			const slots = benchSize / benchRequest
			b.SetBytes(benchRequest)
			b.ReportAllocs()
			b.ResetTimer()
			issued := 0
			for issued < b.N {
				k := min(benchDepth, b.N-issued)
				for i := range k {
					start := uint64((issued+i)%slots) * sectors
					if e := cReadAsync(h, start, sectors, unsafe.Add(bufs, i*benchRequest), cnt); e != vixAsync {
						b.Fatalf("ReadAsync: %d", e)
					}
				}
				if e := cWait(h); e != vixOK {
					b.Fatalf("Wait: %d", e)
				}
				issued += k
			}
			b.StopTimer()
			if cnt.done() != int64(issued) || cnt.failed() != 0 {
				b.Fatalf("%d requests: %d callbacks, %d failed", issued, cnt.done(), cnt.failed())
			}
			// The last batch's buffers hold the disk's bytes.
			last := issued - min(benchDepth, issued)
			for i := range issued - last {
				off := ((last + i) % slots) * benchRequest
				if !bytes.Equal(cBytes(unsafe.Add(bufs, i*benchRequest), benchRequest), data[off:off+benchRequest]) {
					b.Fatalf("request %d read other bytes than the disk's at %d", last+i, off)
				}
			}
		})
	}
}

func BenchmarkRead(b *testing.B) {
	data := benchData()
	conn, h := benchLocal(b, data)
	defer cDisconnect(conn)
	defer cClose(h)
	buf := cMalloc(benchRequest)
	defer cFree(buf)
	const sectors = benchRequest / 512
	b.SetBytes(benchRequest)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if e := cRead(h, uint64(i%(benchSize/benchRequest))*sectors, sectors, buf); e != vixOK {
			b.Fatalf("Read: %d", e)
		}
	}
}

// BenchmarkThreadReads is BenchmarkReadAsync with nbdkit's threads: a C
// thread issues the requests, keeping benchDepth in flight, and the C
// callbacks wake it.
func BenchmarkThreadReads(b *testing.B) {
	data := benchData()
	for _, tc := range benchOpeners {
		b.Run(tc.name, func(b *testing.B) {
			conn, h := tc.open(b, data)
			defer cDisconnect(conn)
			defer cClose(h)
			bufs := cMalloc(benchDepth * benchRequest)
			defer cFree(bufs)
			b.SetBytes(benchRequest)
			b.ReportAllocs()
			b.ResetTimer()
			failed, e := cThreadReads(h, uint64(b.N), benchRequest/512, benchSize/benchRequest, benchDepth, bufs)
			b.StopTimer()
			if e != vixOK || failed != 0 {
				b.Fatalf("%d requests: error %d, %d failed", b.N, e, failed)
			}
		})
	}
}

// TestAsyncSlots: a handle runs at most its slots of asynchronous requests
// at once, a ReadAsync past them waits for one, and every request still
// completes with the disk's bytes.
func TestAsyncSlots(t *testing.T) {
	for _, tc := range []struct {
		mode string
		want int
	}{
		{vdisk.ModeFile, 16},
		{vdisk.ModeDirect, 16},
		{vdisk.ModeNBDSSL, 256},
		{vdisk.ModeNBD, 256},
	} {
		if got := asyncSlots(vdisk.DefaultConfig(), tc.mode); got != tc.want {
			t.Errorf("asyncSlots(defaults, %s) = %d, want %d", tc.mode, got, tc.want)
		}
	}

	data := benchData()[:8<<20]
	conn, hp := benchLocal(t, data)
	defer cDisconnect(conn)
	defer cClose(hp)
	v, _ := reg.get(hp)
	h := v.(*diskHandle)
	const sectors = benchRequest / 512
	const n = 4 * 16
	bufs := cMalloc(n * benchRequest)
	defer cFree(bufs)
	cnt := newCCounter()
	defer cnt.free()

	// Every slot taken: a request has to wait.
	for range cap(h.slots) {
		h.slots <- struct{}{}
	}
	returned := make(chan uint64)
	go func() { returned <- cReadAsync(hp, 0, sectors, bufs, cnt) }()
	select {
	case e := <-returned:
		t.Fatalf("ReadAsync returned %d with every slot taken", e)
	case <-time.After(100 * time.Millisecond):
	}
	for range cap(h.slots) {
		<-h.slots
	}
	if e := <-returned; e != vixAsync {
		t.Fatalf("ReadAsync: %d", e)
	}
	// More requests than slots.
	for i := 1; i < n; i++ {
		start := uint64(i%(len(data)/benchRequest)) * sectors
		if e := cReadAsync(hp, start, sectors, unsafe.Add(bufs, i*benchRequest), cnt); e != vixAsync {
			t.Fatalf("ReadAsync %d: %d", i, e)
		}
	}
	if e := cWait(hp); e != vixOK {
		t.Fatalf("Wait: %d", e)
	}
	if cnt.done() != n || cnt.failed() != 0 {
		t.Fatalf("%d requests: %d callbacks, %d failed", n, cnt.done(), cnt.failed())
	}
	for i := range n {
		off := (i % (len(data) / benchRequest)) * benchRequest
		if !bytes.Equal(cBytes(unsafe.Add(bufs, i*benchRequest), benchRequest), data[off:off+benchRequest]) {
			t.Fatalf("request %d read other bytes than the disk's at %d", i, off)
		}
	}
}

// TestCPUProfile: VDISK_CPUPROFILE makes InitEx start a CPU profile that
// Exit writes out.
func TestCPUProfile(t *testing.T) {
	if f := flag.Lookup("test.cpuprofile"); f != nil && f.Value.String() != "" {
		t.Skip("go test -cpuprofile runs the one CPU profile a process can have")
	}
	p := filepath.Join(t.TempDir(), "cpu.prof")
	t.Setenv("VDISK_CPUPROFILE", p)
	if e := VixDiskLib_InitEx(8, 0, nil, nil, nil, nil, nil); e != vixOK {
		t.Fatalf("InitEx: %d", e)
	}
	VixDiskLib_Exit()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Fatalf("%s holds %d bytes, not a gzipped pprof profile", p, len(b))
	}
}
