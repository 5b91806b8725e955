package datastore

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/format/vmdk"
)

// The kill test's workload: rounds of pipelined writes, each into blocks
// no earlier round wrote (so every write allocates a grain), a flush after
// each round. Round r writes killBlocks 4 KiB blocks at
// (r*killBlocks+i)*killStride, each holding r+1 and i.
const (
	killSize   = 1 << 30
	killBlocks = 64
	killStride = 64 << 10
	killRounds = killSize / killStride / killBlocks // 256
)

func killBlock(r, i int) []byte {
	b := make([]byte, 4096)
	for o := 0; o < len(b); o += 16 {
		binary.LittleEndian.PutUint64(b[o:], uint64(r+1))
		binary.LittleEndian.PutUint64(b[o+8:], uint64(i))
	}
	return b
}

// killChild is the host the test kills: it writes rounds with 8 writers
// until killed, printing "flushed R" once round R is durable.
func killChild(dir string) {
	ctx := context.Background()
	s, err := Open(ctx, dir, nil)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	d, err := s.Disk("d")
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	h, err := d.OpenLive(false)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	start, _ := strconv.Atoi(os.Getenv("VDISK_TEST_KILL_ROUND"))
	for r := start; r < killRounds; r++ {
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for i := w; i < killBlocks; i += 8 {
					if _, err := h.WriteAt(killBlock(r, i), int64(r*killBlocks+i)*killStride); err != nil {
						fmt.Println("error:", err)
						os.Exit(1)
					}
					if i%16 == w {
						// Flushes race the writes, as a guest's do: a
						// write-back takes grains whose tables it misses.
						h.Flush()
					}
				}
			})
		}
		wg.Wait()
		if err := h.Flush(); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Printf("flushed %d\n", r)
	}
	fmt.Println("done")
	select {} // wait for the kill
}

// TestKillWhileWritingSESparse SIGKILLs a host while it writes an SEsparse
// disk with writes and flushes in flight, several times over. Each restart
// must reclaim the leaked grains before serving the disk (logging it), so
// that `vdisk check` then finds no leak and no error, and every round
// acknowledged by a flush must read back intact (the round in flight may
// be there in part; later blocks read as zeros).
func TestKillWhileWritingSESparse(t *testing.T) {
	if dir := os.Getenv("VDISK_TEST_KILL_DIR"); dir != "" {
		killChild(dir)
		return
	}
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, dir)
	if _, err := s.CreateDisk(ctx, DiskSpec{Name: "d", Capacity: killSize, Type: vmdk.SESparse}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	flushed := -1 // the last round a child acknowledged
	leaks := 0
	for kill := 0; kill < 6 && flushed < killRounds-4; kill++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKillWhileWritingSESparse$")
		cmd.Env = append(os.Environ(), "VDISK_TEST_KILL_DIR="+dir, fmt.Sprintf("VDISK_TEST_KILL_ROUND=%d", flushed+1))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(out)
		target := flushed + 2 + rng.IntN(4)
		for lines.Scan() {
			l := lines.Text()
			if strings.HasPrefix(l, "error:") {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("child: %s", l)
			}
			if r, ok := strings.CutPrefix(l, "flushed "); ok {
				flushed, _ = strconv.Atoi(r)
				if flushed >= target {
					// Kill in the middle of the next round.
					time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
					break
				}
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		go func() {
			for lines.Scan() {
			}
		}()
		cmd.Wait()
		n := checkAfterKill(t, dir, flushed)
		leaks += n
		t.Logf("kill %d after round %d: %d leaked grains reclaimed", kill, flushed, n)
	}
	if leaks == 0 {
		t.Error("no kill left a leaked grain: the test shows nothing (make the child race flushes harder)")
	}
}

// checkAfterKill reopens the datastore after a kill, checks the leaks
// were reclaimed before the disk was served and that the acknowledged
// rounds read back, and closes it cleanly. It returns the grains
// reclaimed.
func checkAfterKill(t *testing.T, dir string, flushed int) int {
	t.Helper()
	ctx := context.Background()
	var logs bytes.Buffer
	s, err := Open(ctx, dir, &Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	d, err := s.Disk("d")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "reclaimed the leaked grains") {
		t.Errorf("no reclamation logged after a kill:\n%s", logs.String())
	}
	n := d.reclaimed
	h, err := d.OpenLive(true)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4096)
	zero := make([]byte, 4096)
	for r := 0; r <= flushed+2 && r < killRounds; r++ {
		for i := range killBlocks {
			if _, err := h.ReadAt(b, int64(r*killBlocks+i)*killStride); err != nil {
				t.Fatal(err)
			}
			switch {
			case bytes.Equal(b, killBlock(r, i)):
			case r > flushed && bytes.Equal(b, zero):
			default:
				t.Fatalf("after a kill with round %d acknowledged: block %d of round %d reads %x…", flushed, i, r, b[:16])
			}
		}
	}
	h.Close()
	// While the store is open the leaf is open: check its files as
	// `vdisk check` would.
	rep, err := vmdk.Check(ctx, d.layerPath(d.st.Leaf), &vmdk.CheckOptions{IgnoreCID: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Leaks != 0 || rep.Errors != 0 {
		t.Fatalf("check after the reclamation: %d leaks, %d errors: %+v", rep.Leaks, rep.Errors, rep.Problems)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestReclaimInterrupted: a reclamation that stops before it is done (a
// crash, here an error) leaves writing.json, so the next open reclaims
// again; and a clean close leaves nothing to reclaim.
func TestReclaimInterrupted(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, dir)
	if _, err := s.CreateDisk(ctx, DiskSpec{Name: "d", Capacity: 64 << 20, Type: vmdk.SESparse}); err != nil {
		t.Fatal(err)
	}
	d, _ := s.Disk("d")
	if _, err := os.Stat(d.writingPath()); err != nil {
		t.Fatalf("an SEsparse leaf open for writing is not recorded: %v", err)
	}
	h, _ := d.OpenLive(false)
	if _, err := h.WriteAt(killBlock(1, 1), 0); err != nil {
		t.Fatal(err)
	}
	h.Close()
	// Leak grains as a kill does: allocated and durable in the maps and
	// the high-water mark, named by no table.
	s.dropLock()
	leakGrains(t, d.layerPath(0))
	crash := errors.New("crash")
	s2, err := Open(ctx, dir, &Options{failReclaim: func(int) error { return crash }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Disk("d"); err == nil {
		t.Fatal("the disk is served though its reclamation did not finish")
	}
	s2.Close()
	if _, err := os.Stat(filepath.Join(dir, "disks", "d", "writing.json")); err != nil {
		t.Fatalf("an interrupted reclamation lost writing.json: %v", err)
	}
	s3 := openStore(t, dir)
	d3, err := s3.Disk("d")
	if err != nil {
		t.Fatal(err)
	}
	if d3.reclaimed == 0 {
		t.Error("the reclamation after the interrupted one reclaimed nothing")
	}
	if err := s3.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "disks", "d", "writing.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("writing.json after a clean close: %v", err)
	}
	rep, err := vmdk.Check(ctx, d3.layerPath(0), &vmdk.CheckOptions{IgnoreCID: true})
	if err != nil || rep.Leaks != 0 || rep.Errors != 0 {
		t.Fatalf("check: %v, %+v", err, rep)
	}
	s4 := openStore(t, dir)
	defer s4.Close()
	if d4, _ := s4.Disk("d"); d4.reclaimed != 0 {
		t.Errorf("a clean stop was followed by a reclamation of %d grains", d4.reclaimed)
	}
}

// leakGrains makes an SEsparse extent hold leaked grains: it writes some
// through vmdk and drops the grain tables' update, as a process killed
// between a write-back's header and its tables would.
func leakGrains(t *testing.T, path string) {
	t.Helper()
	ctx := context.Background()
	v, err := vmdk.Open(ctx, path, &vmdk.OpenOptions{IgnoreCID: true, ForceShare: true})
	if err != nil {
		t.Fatal(err)
	}
	info := v.Info()
	var ext string
	for _, f := range info.Files {
		if f.Kind == "SESPARSE" {
			ext = f.Path
		}
	}
	before, err := os.ReadFile(ext)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		if _, err := v.WriteAt(killBlock(2, i), int64(1+i)<<20); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(ext)
	if err != nil {
		t.Fatal(err)
	}
	// Put back the grain directory and tables as they were (from the
	// directory to the free bitmap), keeping the headers and maps: the new
	// grains stay allocated and named by no table.
	gd, n := seSections(t, after)
	copy(after[gd:n], before[gd:n])
	if err := os.WriteFile(ext, after, 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := vmdk.Check(ctx, path, &vmdk.CheckOptions{IgnoreCID: true})
	if err != nil || rep.Leaks == 0 {
		t.Fatalf("no leak made: %v, %+v", err, rep)
	}
}

// seSections returns the byte offsets of an SEsparse file's grain
// directory and free bitmap (from the constant header, in sectors).
func seSections(t *testing.T, b []byte) (int, int) {
	t.Helper()
	gd := binary.LittleEndian.Uint64(b[128:]) * 512
	fb := binary.LittleEndian.Uint64(b[160:]) * 512
	if gd == 0 || gd >= fb || fb > uint64(len(b)) {
		t.Fatalf("grain directory at %d, free bitmap at %d in a file of %d bytes", gd, fb, len(b))
	}
	return int(gd), int(fb)
}
