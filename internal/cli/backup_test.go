package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vdisk-project/vdisk"
	"github.com/vdisk-project/vdisk/backup/storage/storagetest"
	"github.com/vdisk-project/vdisk/internal/testenv"
	"github.com/vdisk-project/vdisk/server/servertest"
)

// backupRepo makes a repository for a test and points $VDISK_REPO at it.
func backupRepo(t *testing.T) string {
	t.Helper()
	repo := filepath.Join(t.TempDir(), "repo")
	t.Setenv("VDISK_REPO", repo)
	t.Setenv("VDISK_REPO_PASSWORD", "test password")
	mustRun(t, "repo", "init", "--chunk-size", "256K", "--pack-size", "1M")
	return repo
}

// lastBackup runs backup --output=json and returns its one result.
func lastBackup(t *testing.T, args ...string) backupResult {
	t.Helper()
	var rs []backupResult
	out := mustRun(t, append([]string{"backup", "--output=json", "--progress", "none"}, args...)...)
	if err := json.Unmarshal([]byte(out), &rs); err != nil || len(rs) != 1 {
		t.Fatalf("backup output %q: %v", out, err)
	}
	return rs[0]
}

func restoredEquals(t *testing.T, ref string, want []byte) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "r.raw")
	mustRun(t, "restore", "-O", "raw", ref, out)
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("restore of %s differs from the ground truth at byte %d", ref, i)
			}
		}
		t.Fatalf("restore of %s: %d bytes, want %d", ref, len(got), len(want))
	}
}

// TestBackupHostVM: generations of random writes, zeroes and trims on a
// host VM with two disks, an incremental backup after each, and every
// point restored equal to the disks as they were, bit for bit; the
// incrementals read only chunks the generation touched.
func TestBackupHostVM(t *testing.T) {
	t.Setenv("VDISK_CONFIG_DIR", t.TempDir())
	h := servertest.New(t, nil)
	pwf := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwf, []byte(servertest.Password+"\n"), 0o600)
	mustRun(t, "login", "--server", h.API, "--thumbprint", h.Thumbprint, "--password-file", pwf)
	const size = 16 << 20
	const chunk = 256 << 10
	keys := []string{"scsi0:0", "scsi0:1"}
	mustRun(t, "vm", "create", "web")
	for _, k := range keys {
		mustRun(t, "vm", "add-disk", "--cbt", "web", k, "16M")
	}
	backupRepo(t)
	c, err := vdisk.Connect(ctx, vdisk.ConnectParams{Server: h.API, User: "admin", Password: servertest.Password, Thumbprint: h.Thumbprint, Transports: "nbdssl"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	model := [][]byte{make([]byte, size), make([]byte, size)}
	rng := rand.New(rand.NewSource(1))
	var points []string
	var truth [][][]byte
	for gen := 0; gen < 5; gen++ {
		touched := map[string]map[int64]bool{}
		blocks := map[string]map[int64]bool{} // 4 KiB blocks written, zeroed or trimmed
		for i, k := range keys {
			touched[k] = map[int64]bool{}
			blocks[k] = map[int64]bool{}
			d, err := c.Open(ctx, vdisk.Spec{VM: "web", Key: k}, 0)
			if err != nil {
				t.Fatal(err)
			}
			ops := 1 + rng.Intn(8)
			if gen == 0 {
				ops = 20
				// All data: the unchanged part of a changed chunk is
				// not a hole that extents would let the backup skip.
				rng.Read(model[i])
				if _, err := d.WriteAt(model[i], 0); err != nil {
					t.Fatal(err)
				}
			}
			for range ops {
				off := rng.Int63n(size/4096) * 4096
				n := min(int64(4096*(1+rng.Intn(96))), size-off)
				switch rng.Intn(4) {
				case 0:
					if err := d.WriteZeroes(off, n, 0); err != nil {
						t.Fatal(err)
					}
					clear(model[i][off : off+n])
				case 1:
					if err := d.Trim(off, n); err != nil {
						t.Fatal(err)
					}
					// What a trimmed range reads is the disk's to say.
					if _, err := d.ReadAt(model[i][off:off+n], off); err != nil {
						t.Fatal(err)
					}
				default:
					rng.Read(model[i][off : off+n])
					if _, err := d.WriteAt(model[i][off:off+n], off); err != nil {
						t.Fatal(err)
					}
				}
				for ch := off / chunk; ch <= (off+n-1)/chunk; ch++ {
					touched[k][ch] = true
				}
				for b := off / 4096; b < (off+n)/4096; b++ {
					blocks[k][b] = true
				}
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
		}
		r := lastBackup(t, "--tag", fmt.Sprint("gen", gen), "vdisk:vm/web")
		points = append(points, r.Point)
		truth = append(truth, [][]byte{bytes.Clone(model[0]), bytes.Clone(model[1])})
		if gen > 0 {
			if r.Parent == "" || len(r.Full) != 0 {
				t.Errorf("gen %d: not incremental (parent %q, full %v)", gen, r.Parent, r.Full)
			}
			// Partly changed chunks are merged with the parent's: only
			// the changed bytes are read, and only changed chunks stored.
			var changed, chunks int64
			for _, k := range keys {
				changed += int64(len(blocks[k])) * 4096
				chunks += int64(len(touched[k]))
			}
			if r.Summary.BytesRead > changed*105/100 || r.Summary.NewChunks > chunks {
				t.Errorf("gen %d: read %d bytes for %d changed, stored %d chunks of %d changed", gen, r.Summary.BytesRead, changed, r.Summary.NewChunks, chunks)
			}
		}
	}
	// Every point equals its generation, restored into new images.
	for g, id := range points {
		for i, k := range keys {
			restoredEquals(t, id+"/"+k, truth[g][i])
		}
	}
	// Into an existing image: only what differs is written.
	out := filepath.Join(t.TempDir(), "existing.raw")
	mustRun(t, "restore", "-O", "raw", points[0]+"/scsi0:1", out)
	msg := mustRun(t, "restore", points[len(points)-1]+"/scsi0:1", out)
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, truth[len(points)-1][1]) {
		t.Errorf("restore into an existing image differs from the ground truth")
	}
	if !bytes.Contains([]byte(msg), []byte("unchanged")) {
		t.Errorf("restore output: %s", msg)
	}
	// Every disk into a directory; a point read in place (instant restore).
	dir := filepath.Join(t.TempDir(), "all")
	mustRun(t, "restore", "-O", "raw", points[2], dir)
	for i, k := range keys {
		b, err := os.ReadFile(filepath.Join(dir, fileName(k)+".raw"))
		if err != nil || !bytes.Equal(b, truth[2][i]) {
			t.Errorf("restore of every disk: %s: %v", k, err)
		}
	}
	if out := mustRun(t, "compare", "point:"+points[2]+"/scsi0:0", filepath.Join(dir, "scsi0-0.raw")); !bytes.Contains([]byte(out), []byte("identical")) {
		t.Errorf("compare point: %s", out)
	}
	// Into the host disk itself after it changed: only the areas its
	// change tracking reports since the point are restored.
	last := len(points) - 1
	d, err := c.Open(ctx, vdisk.Spec{VM: "web", Key: "scsi0:0"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	junk := make([]byte, 64<<10)
	rng.Read(junk)
	d.WriteAt(junk, 3<<20)
	d.WriteAt(junk, 11<<20)
	d.Close()
	msg = mustRun(t, "restore", points[last]+"/scsi0:0", "vdisk:vm/web/scsi0:0")
	if !strings.Contains(msg, "unchanged 0 B, not touched 15.5 MiB") {
		t.Errorf("restore by changed areas looked at more than the two changed chunks: %s", msg)
	}
	live := filepath.Join(t.TempDir(), "live.raw")
	mustRun(t, "convert", "-O", "raw", "vdisk:vm/web/scsi0:0", live)
	if b, _ := os.ReadFile(live); !bytes.Equal(b, truth[last][0]) {
		t.Error("the host disk restored by changed areas differs from its point")
	}
	// A whole VM recreated from its point.
	mustRun(t, "restore", points[3], "vdisk:vm/web2")
	for i, k := range keys {
		r := filepath.Join(t.TempDir(), "vm2.raw")
		mustRun(t, "convert", "-O", "raw", "vdisk:vm/web2/"+k, r)
		if b, _ := os.ReadFile(r); !bytes.Equal(b, truth[3][i]) {
			t.Errorf("VM restored from its point: disk %s differs", k)
		}
	}
	if _, _, code := run(t, "restore", points[3], "vdisk:vm/web2"); code == 0 {
		t.Error("restoring a VM over an existing one succeeded")
	}
	// The host is left clean, and the repository verifies.
	vm, err := c.VM(ctx, "web")
	if err != nil || len(vm.Snapshots) != 0 {
		t.Errorf("snapshots left on the host: %v %v", vm.Snapshots, err)
	}
	mustRun(t, "verify", "--read-data")
	var pts []pointJSON
	json.Unmarshal([]byte(mustRun(t, "points", "--output=json")), &pts)
	if len(pts) != len(points) || pts[0].Source != "vdisk:vm/web" || len(pts[0].Disks) != 2 || pts[0].Tags[0] != "gen0" {
		t.Errorf("points: %+v", pts)
	}
}

// TestBackupNBDBitmap: qemu-nbd exports a qcow2 with a persistent dirty
// bitmap that qemu-io's writes set; each incremental reads only the dirty
// areas, and every point restores to what qemu-img reads.
func TestBackupNBDBitmap(t *testing.T) {
	qimg := testenv.Tool(t, "qemu-img")
	qio := testenv.Tool(t, "qemu-io")
	qnbd := testenv.Tool(t, "qemu-nbd")
	backupRepo(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "d.qcow2")
	sh := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	sh(qimg, "create", "-f", "qcow2", img, "32M")
	sh(qimg, "bitmap", "--add", "-g", "64K", img, "b0")
	// All data, so that only merging spares reading the unchanged parts
	// of changed chunks.
	sh(qio, "-f", "qcow2", "-c", "write -P 9 0 32M", img)
	rng := rand.New(rand.NewSource(2))
	for gen := 0; gen < 4; gen++ {
		chunks := map[int64]bool{}
		blocks := map[int64]bool{} // 64 KiB blocks, the bitmap's granularity
		for range 1 + rng.Intn(5) {
			off := rng.Int63n(500) * 64 << 10
			n := int64(64<<10) * int64(1+rng.Intn(4))
			for c := off / (256 << 10); c <= (off+n-1)/(256<<10); c++ {
				chunks[c] = true
			}
			for b := off / (64 << 10); b < (off+n)/(64<<10); b++ {
				blocks[b] = true
			}
			op := fmt.Sprintf("write -P %d %d %d", 1+rng.Intn(200), off, n)
			if rng.Intn(3) == 0 {
				op = fmt.Sprintf("write -z %d %d", off, n)
			}
			sh(qio, "-f", "qcow2", "-c", op, img)
		}
		sock := filepath.Join(dir, "sock") // the same source every generation
		os.Remove(sock)
		cmd := exec.Command(qnbd, "-r", "-t", "-e", "8", "-f", "qcow2", "-B", "b0", "-k", sock, img)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 100; i++ {
			if _, err := os.Stat(sock); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		// The last generation reads partly changed chunks whole, as
		// --reread-partial asks: every changed chunk (all data) is read.
		reread := gen == 3
		args := []string{"--bitmap", "b0", "nbd+unix:///?socket=" + sock}
		if reread {
			args = append([]string{"--reread-partial"}, args...)
		}
		r := lastBackup(t, args...)
		cmd.Process.Kill()
		cmd.Wait()
		changed := int64(len(blocks)) * 64 << 10
		if reread && r.Summary.BytesRead != int64(len(chunks))*256<<10 {
			t.Errorf("gen %d with --reread-partial: read %d bytes, want the %d changed chunks whole (%d)", gen, r.Summary.BytesRead, len(chunks), int64(len(chunks))*256<<10)
		}
		if gen > 0 && !reread && (r.Parent == "" || r.Summary.BytesRead > changed*105/100 || r.Summary.NewChunks > int64(len(chunks))) {
			t.Errorf("gen %d: parent %q, read %d bytes for %d changed, stored %d chunks of %d changed", gen, r.Parent, r.Summary.BytesRead, changed, r.Summary.NewChunks, len(chunks))
		}
		sh(qimg, "bitmap", "--clear", img, "b0")
		raw := filepath.Join(dir, "truth.raw")
		os.Remove(raw)
		sh(qimg, "convert", "-f", "qcow2", "-O", "raw", img, raw)
		want, _ := os.ReadFile(raw)
		restoredEquals(t, r.Point, want)
	}
}

// TestBackupKilled kills backups with SIGKILL at random moments: the
// repository always verifies, no point is half visible, and the next
// run resumes without reading again what was stored.
func TestBackupKilled(t *testing.T) {
	repo := backupRepo(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	data := make([]byte, 48<<20)
	rng := rand.New(rand.NewSource(3))
	for off := 0; off < len(data); off += 1 << 20 {
		if rng.Intn(4) != 0 { // some chunks stay holes
			rng.Read(data[off : off+1<<20])
		}
	}
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	args, _ := json.Marshal([]string{"backup", "--repo", repo, "--progress", "json", "--checkpoint", "8", "-j", "2", src})
	rounds := 4
	if os.Getenv("VDISK_TEST_LONG") == "1" {
		rounds = 40
	}
	killed, lastKilled := 0, false
	for i := 0; i < rounds; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "VDISK_TEST_MAIN_ARGS="+string(args))
		progress, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill at a random moment once chunks are flowing (the key
		// derivation before that is not what this test is about).
		b := make([]byte, 1)
		progress.Read(b)
		time.Sleep(time.Duration(rng.Intn(300)) * time.Millisecond)
		cmd.Process.Kill()
		go io.Copy(io.Discard, progress)
		lastKilled = cmd.Wait() != nil
		if lastKilled {
			killed++
		}
		if out, errs, code := run(t, "verify"); code != 0 {
			t.Fatalf("round %d: verify after SIGKILL: exit %d\n%s%s", i, code, out, errs)
		}
		var pts []pointJSON
		json.Unmarshal([]byte(mustRun(t, "points", "--output=json")), &pts)
		for _, p := range pts {
			restoredEquals(t, p.ID, data) // a visible point is whole
		}
	}
	if killed == 0 {
		t.Fatal("no backup was killed mid-way: the test proves nothing (make the source larger)")
	}
	// A complete run now: it finishes, resumes from what was stored, and
	// the point is right.
	r := lastBackup(t, "--no-resume=false", src)
	t.Logf("%d of %d runs killed; final run read %d bytes, resumed %d", killed, rounds, r.Summary.BytesRead, r.Summary.BytesResumed)
	if lastKilled && r.Summary.BytesResumed == 0 {
		// (A run that finished drops the checkpoints before it.)
		t.Error("the run after a killed one resumed nothing")
	}
	restoredEquals(t, r.Point, data)
	mustRun(t, "verify", "--read-data")
}

// TestBackupS3: the same cycle on a real S3 server (versitygw), the
// server stopped and restarted between backups, and a wrong password.
func TestBackupS3(t *testing.T) {
	srv := storagetest.Versitygw(t)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_ENDPOINT_URL", srv.Endpoint)
	t.Setenv("VDISK_REPO", "s3://vdisk-test/repo1")
	t.Setenv("VDISK_REPO_PASSWORD", "s3 password")
	mustRun(t, "repo", "init", "--chunk-size", "256K", "--pack-size", "1M")
	dir := t.TempDir()
	img := filepath.Join(dir, "d.raw")
	data := make([]byte, 8<<20)
	rng := rand.New(rand.NewSource(5))
	var ids []string
	var truth [][]byte
	for gen := 0; gen < 3; gen++ {
		for range 4 {
			off := rng.Intn(len(data)-65536) &^ 4095
			rng.Read(data[off : off+65536])
		}
		os.WriteFile(img, data, 0o644)
		if gen == 1 {
			srv.Stop()
			srv.Start() // the repository outlives its server
		}
		r := lastBackup(t, img)
		ids = append(ids, r.Point)
		truth = append(truth, bytes.Clone(data))
	}
	for i, id := range ids {
		restoredEquals(t, id, truth[i])
	}
	mustRun(t, "verify", "--read-data")
	// The figures for a textfile collector, in Prometheus' format.
	mf := filepath.Join(dir, "backup.prom")
	mustRun(t, "backup", "--metrics-file", mf, img)
	b, err := os.ReadFile(mf)
	if err != nil || !bytes.Contains(b, []byte("# TYPE vdisk_backup_read_bytes gauge\nvdisk_backup_read_bytes{source=\""+img+"\"} ")) ||
		!bytes.Contains(b, []byte("vdisk_backup_incremental{source=\""+img+"\"} 1")) {
		t.Errorf("metrics file: %v\n%s", err, b)
	}
	t.Setenv("VDISK_REPO_PASSWORD", "wrong")
	if _, _, code := run(t, "points"); code != ExitPermission {
		t.Errorf("wrong password: exit %d, want %d", code, ExitPermission)
	}
}

// TestForgetPrune: forget by policy, prune with no grace, the kept points
// still restore and verify, the repository shrinks.
func TestForgetPrune(t *testing.T) {
	repo := backupRepo(t)
	img := filepath.Join(t.TempDir(), "d.raw")
	rng := rand.New(rand.NewSource(6))
	var truth [][]byte
	var ids []string
	for gen := 0; gen < 4; gen++ {
		data := make([]byte, 4<<20)
		rng.Read(data) // every generation new: nothing shared
		os.WriteFile(img, data, 0o644)
		ids = append(ids, lastBackup(t, img).Point)
		truth = append(truth, data)
	}
	size := func() int64 {
		var n int64
		filepath.Walk(repo, func(_ string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() {
				n += fi.Size()
			}
			return nil
		})
		return n
	}
	before := size()
	out := mustRun(t, "forget", "--keep-last", "2", "--dry-run")
	if !bytes.Contains([]byte(out), []byte("would forget 2 points")) {
		t.Errorf("dry run: %s", out)
	}
	mustRun(t, "forget", "--keep-last", "2", "--prune", "--grace", "-1s")
	mustRun(t, "forget", "--prune", "--grace", "-1s") // deletes what the first prune condemned
	var pts []pointJSON
	json.Unmarshal([]byte(mustRun(t, "points", "--output=json")), &pts)
	if len(pts) != 2 || pts[0].ID != ids[2] || pts[1].ID != ids[3] {
		t.Fatalf("points after forget: %+v", pts)
	}
	for i := 2; i < 4; i++ {
		restoredEquals(t, ids[i], truth[i])
	}
	mustRun(t, "verify", "--read-data")
	if after := size(); after > before*3/4 {
		t.Errorf("repository %d bytes before, %d after forgetting half its data", before, after)
	}
}

// TestInstantRestoreOverlay serves a point over NBD with an overlay,
// writes through qemu-io, and restores the point with the overlay's
// writes applied; the point itself is unchanged.
func TestInstantRestoreOverlay(t *testing.T) {
	qio := testenv.Tool(t, "qemu-io")
	e := serveOverlay(t, 8<<20, 7)
	if out, err := exec.Command(qio, "-f", "raw", "-c", "write -P 85 1M 64k", "-c", "write -z 3M 128k", "-c", "read -P 85 1M 64k", e.uri).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io through the overlay: %v\n%s", err, out)
	}
	want := bytes.Clone(e.data)
	copy(want[1<<20:], bytes.Repeat([]byte{85}, 64<<10))
	clear(want[3<<20 : 3<<20+128<<10])
	e.check(t, want, "whole-grain writes")
	dir, id, ov := e.dir, e.id, e.overlay
	restoredEquals(t, id, e.data) // the point is as it was
	// The overlay belongs to its point: another point is refused.
	img := filepath.Join(dir, "d.raw")
	os.WriteFile(img, want, 0o644)
	other := lastBackup(t, img).Point
	if _, _, code := run(t, "restore", "--overlay", ov, "-O", "raw", other, filepath.Join(dir, "o2.raw")); code != ExitInvalid || fileExists(filepath.Join(dir, "o2.raw")) {
		t.Errorf("an overlay of another point: exit %d", code)
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// TestPruneKilled kills forget --prune (no grace) at random moments: the
// repository always verifies, and every point it still lists restores.
func TestPruneKilled(t *testing.T) {
	repo := backupRepo(t)
	img := filepath.Join(t.TempDir(), "d.raw")
	rng := rand.New(rand.NewSource(8))
	truth := map[string][]byte{}
	for gen := 0; gen < 6; gen++ {
		data := make([]byte, 6<<20)
		rng.Read(data)
		os.WriteFile(img, data, 0o644)
		truth[lastBackup(t, img).Point] = data
	}
	args, _ := json.Marshal([]string{"forget", "--repo", repo, "--keep-last", "1", "--prune", "--grace", "-1s"})
	killed := 0
	for i := 0; i < 4; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "VDISK_TEST_MAIN_ARGS="+string(args))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.Intn(400)) * time.Millisecond)
		cmd.Process.Kill()
		if cmd.Wait() != nil {
			killed++
		}
		if out, errs, code := run(t, "verify", "--read-data"); code != 0 {
			t.Fatalf("round %d: verify after killing prune: exit %d\n%s%s", i, code, out, errs)
		}
		var pts []pointJSON
		json.Unmarshal([]byte(mustRun(t, "points", "--output=json")), &pts)
		for _, p := range pts {
			restoredEquals(t, p.ID, truth[p.ID])
		}
	}
	t.Logf("%d of 4 prunes killed", killed)
}

// TestRestoreKilled kills restores into a new VMDK at random moments; the
// same command run again continues into the image it left (an existing
// target: only chunks that differ are written) and the result is right.
func TestRestoreKilled(t *testing.T) {
	repo := backupRepo(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "d.raw")
	data := make([]byte, 48<<20)
	rng := rand.New(rand.NewSource(9))
	rng.Read(data)
	os.WriteFile(img, data, 0o644)
	id := lastBackup(t, img).Point
	target := filepath.Join(dir, "r.vmdk")
	args, _ := json.Marshal([]string{"restore", "--repo", repo, "-p", "-j", "1", id, target})
	killed := 0
	for i := 0; i < 3; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "VDISK_TEST_MAIN_ARGS="+string(args))
		progress, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		progress.Read(b) // restoring has begun
		time.Sleep(time.Duration(rng.Intn(100)) * time.Millisecond)
		cmd.Process.Kill()
		go io.Copy(io.Discard, progress)
		if cmd.Wait() != nil {
			killed++
		}
	}
	t.Logf("%d of 3 restores killed", killed)
	check := func(target string) {
		t.Helper()
		out := mustRun(t, "restore", id, target)
		t.Log(strings.TrimSpace(out))
		raw := filepath.Join(dir, "check.raw")
		os.Remove(raw)
		mustRun(t, "convert", "-O", "raw", target, raw)
		if got, _ := os.ReadFile(raw); !bytes.Equal(got, data) {
			t.Fatalf("the restore continued into %s differs from the source", target)
		}
		if fileExists(target + ".restoring") {
			t.Errorf("the restore marker of %s is left after the restore finished", target)
		}
	}
	// Into the image the kills left, as they left it.
	check(target)
	// A kill while the image was being made, before it could be opened:
	// its marker and a file that is no image yet.
	early := filepath.Join(dir, "early.vmdk")
	os.WriteFile(early, make([]byte, 65536), 0o644)
	os.WriteFile(early+".restoring", []byte("point:"+id+"/disk\n"), 0o600)
	check(early)
}

// TestRestoreThin: a disk with a little data in each chunk restores into
// a new image holding about that data, not whole chunks of zeros.
func TestRestoreThin(t *testing.T) {
	backupRepo(t) // 256 KiB chunks
	dir := t.TempDir()
	img := filepath.Join(dir, "d.raw")
	f, _ := os.Create(img)
	f.Truncate(16 << 20)
	rng := rand.New(rand.NewSource(10))
	b := make([]byte, 8192)
	for off := int64(0); off < 16<<20; off += 256 << 10 {
		rng.Read(b)
		f.WriteAt(b, off+4096)
	}
	f.Close()
	id := lastBackup(t, img).Point
	out := filepath.Join(dir, "r.raw")
	mustRun(t, "restore", "-O", "raw", id, out)
	var st unix.Stat_t
	if err := unix.Stat(out, &st); err != nil {
		t.Fatal(err)
	}
	if data := int64(64 * 8192); st.Blocks*512 > 2*data {
		t.Errorf("restored image allocates %d bytes for %d bytes of data", st.Blocks*512, data)
	}
	want, _ := os.ReadFile(img)
	if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
		t.Error("thin restore differs")
	}
}

// TestBackupMinIOErasure (long): the backup cycle on a 4-drive MinIO
// erasure set that loses a drive in the middle.
func TestBackupMinIOErasure(t *testing.T) {
	testenv.Long(t)
	srv := storagetest.MinIO(t, 4)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_ENDPOINT_URL", srv.Endpoint)
	t.Setenv("VDISK_REPO", "s3://vdisk-ec/repo")
	t.Setenv("VDISK_REPO_PASSWORD", "ec password")
	mustRun(t, "repo", "init", "--chunk-size", "256K", "--pack-size", "1M")
	img := filepath.Join(t.TempDir(), "d.raw")
	data := make([]byte, 16<<20)
	rng := rand.New(rand.NewSource(11))
	truth := map[string][]byte{}
	for gen := 0; gen < 6; gen++ {
		for range 8 {
			off := rng.Intn(len(data)-65536) &^ 4095
			rng.Read(data[off : off+65536])
		}
		os.WriteFile(img, data, 0o644)
		if gen == 3 {
			if err := os.RemoveAll(srv.Drives[0]); err != nil { // one drive gone
				t.Fatal(err)
			}
		}
		truth[lastBackup(t, img).Point] = bytes.Clone(data)
	}
	for id, want := range truth {
		restoredEquals(t, id, want)
	}
	mustRun(t, "verify", "--read-data")
}

// TestBackupNeedsPrivilege: a read-only user cannot back up a host VM, and
// the refusal leaves no snapshot or lease behind.
func TestBackupNeedsPrivilege(t *testing.T) {
	t.Setenv("VDISK_CONFIG_DIR", t.TempDir())
	h := servertest.New(t, nil)
	pwf := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwf, []byte(servertest.Password+"\n"), 0o600)
	mustRun(t, "login", "--server", h.API, "--thumbprint", h.Thumbprint, "--password-file", pwf)
	mustRun(t, "vm", "create", "web")
	mustRun(t, "vm", "add-disk", "--cbt", "web", "scsi0:0", "4M")
	vpw := filepath.Join(t.TempDir(), "vpw")
	os.WriteFile(vpw, []byte("viewer password 1\n"), 0o600)
	mustRun(t, "user", "add", "--password-file", vpw, "viewer", "read-only")
	backupRepo(t)
	mustRun(t, "login", "--server", h.API, "--thumbprint", h.Thumbprint, "--user", "viewer", "--password-file", vpw)
	if _, errs, code := run(t, "backup", "vdisk:vm/web"); code != ExitPermission {
		t.Errorf("backup as a read-only user: exit %d, want %d\n%s", code, ExitPermission, errs)
	}
	mustRun(t, "login", "--server", h.API, "--thumbprint", h.Thumbprint, "--password-file", pwf)
	var vm struct {
		Snapshots []any
		Disks     []struct{ Leases []any }
	}
	json.Unmarshal([]byte(mustRun(t, "vm", "show", "--output=json", "web")), &vm)
	if len(vm.Snapshots) != 0 || len(vm.Disks) != 1 || len(vm.Disks[0].Leases) != 0 {
		t.Errorf("after a refused backup: %+v", vm)
	}
	var pts []pointJSON
	json.Unmarshal([]byte(mustRun(t, "points", "--output=json")), &pts)
	if len(pts) != 0 {
		t.Errorf("a refused backup made points: %+v", pts)
	}
}
