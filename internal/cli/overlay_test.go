package cli

import (
	"bytes"
	"context"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/vdisk-project/vdisk/internal/testenv"
	"github.com/vdisk-project/vdisk/nbd"
)

// TestOverlaySubGrainWrites writes less than a grain through an instant
// restore's overlay: the rest of the grain must still read as the point's
// data, through the export and in the restore with the overlay.
func TestOverlaySubGrainWrites(t *testing.T) {
	qio := testenv.Tool(t, "qemu-io")
	e := serveOverlay(t, 4<<20, 9)
	if out, err := exec.Command(qio, "-f", "raw", "-c", "write -P 85 1052672 4096", "-c", "write -z 2101248 512", e.uri).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io through the overlay: %v\n%s", err, out)
	}
	want := bytes.Clone(e.data)
	copy(want[1052672:], bytes.Repeat([]byte{85}, 4096))
	clear(want[2101248 : 2101248+512])
	e.check(t, want, "sub-grain writes")
}

// overlayExport is a backup point of random data served writable over a
// Unix socket with an instant restore's overlay.
type overlayExport struct {
	dir, id, uri, overlay string
	data                  []byte
	stop                  func()
}

// serveOverlay backs up size random bytes (from seed) into a new
// repository and serves the point with an overlay.
func serveOverlay(t *testing.T, size int, seed int64) overlayExport {
	t.Helper()
	backupRepo(t)
	e := overlayExport{dir: t.TempDir(), data: make([]byte, size)}
	rand.New(rand.NewSource(seed)).Read(e.data)
	img := filepath.Join(e.dir, "d.raw")
	if err := os.WriteFile(img, e.data, 0o644); err != nil {
		t.Fatal(err)
	}
	e.id = lastBackup(t, img).Point
	sock := filepath.Join(e.dir, "s")
	e.overlay = filepath.Join(e.dir, "overlay.vmdk")
	e.stop = startExport(t, []string{"export", "--overlay", e.overlay, "--socket", sock, "point:latest"}, sock)
	e.uri = "nbd+unix:///?socket=" + sock
	return e
}

// check reads the export and, once it is stopped, the restore of the point
// with the overlay applied: both must equal want.
func (e overlayExport) check(t *testing.T, want []byte, what string) {
	t.Helper()
	got := filepath.Join(e.dir, "served.raw")
	mustRun(t, "convert", "-O", "raw", e.uri, got)
	e.stop()
	if b, _ := os.ReadFile(got); !bytes.Equal(b, want) {
		t.Errorf("the export after %s differs from the model at %d", what, firstDiff(b, want))
	}
	out := filepath.Join(e.dir, "out.raw")
	mustRun(t, "restore", "--overlay", e.overlay, "-O", "raw", short(e.id), out)
	if b, _ := os.ReadFile(out); !bytes.Equal(b, want) {
		t.Errorf("the restore with the overlay after %s differs from the model at %d", what, firstDiff(b, want))
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// TestOverlayConcurrentSubGrainWrites has four NBD connections, each with
// many writes in flight, write 4 KiB pieces and zero 512-byte pieces of
// the same grains of an instant restore's overlay in random order: every
// piece lands, and every byte nobody wrote stays the point's.
func TestOverlayConcurrentSubGrainWrites(t *testing.T) {
	e := serveOverlay(t, 4<<20, 11)

	// Pieces: 4 KiB writes at every other 4 KiB slot of 16 grains, and
	// 512-byte zeroes in the slots between, each owned by one connection.
	want := bytes.Clone(e.data)
	type piece struct {
		off  int64
		zero bool
	}
	var pieces []piece
	for g := int64(0); g < 16; g++ {
		base := 1<<20 + g*(64<<10)
		for s := int64(0); s < 16; s++ {
			off := base + s*4096
			if s%2 == 0 {
				pieces = append(pieces, piece{off, false})
				for i := range int64(4096) {
					want[off+i] = byte(off>>12) ^ 0x5a
				}
			} else if s%4 == 1 {
				pieces = append(pieces, piece{off + 512, true})
				clear(want[off+512 : off+1024])
			}
		}
	}
	rand.New(rand.NewSource(12)).Shuffle(len(pieces), func(i, j int) { pieces[i], pieces[j] = pieces[j], pieces[i] })
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	var clients []*nbd.Client
	for c := range 4 {
		cl, err := nbd.Dial(context.Background(), e.uri, nil)
		if err != nil {
			t.Fatal(err)
		}
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 4096)
				for i := c*8 + w; i < len(pieces); i += 32 {
					p := pieces[i]
					var err error
					if p.zero {
						err = cl.WriteZeroes(p.off, 512, 0)
					} else {
						for k := range buf {
							buf[k] = byte(p.off>>12) ^ 0x5a
						}
						_, err = cl.WriteAt(buf, p.off)
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		clients = append(clients, cl)
	}
	wg.Wait()
	for _, cl := range clients {
		if err := cl.Close(); err != nil {
			t.Fatal(err)
		}
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	e.check(t, want, "concurrent sub-grain writes")
}
