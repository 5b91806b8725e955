package main

import (
	"bytes"
	"context"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk"
	"github.com/vdisk-project/vdisk/server"
	"github.com/vdisk-project/vdisk/server/servertest"
)

// TestBackupAllTransports backs up the same disk over file, direct,
// nbdssl and nbd, full then incremental, and checks that every repository
// holds identical bytes, equal to the disk.
func TestBackupAllTransports(t *testing.T) {
	ctx := context.Background()
	const pw = servertest.Password
	h := servertest.New(t, func(c *server.Config) { c.PlainNBDListen = []string{"127.0.0.1:0"} })
	s := h.Server
	api := []string{h.API}
	t.Setenv("VDISK_PASSWORD", pw)
	t.Setenv("VDISK_REPO_PASSWORD", "repo password")

	// A local image with scattered data, cloned into a VM on the host.
	dir := t.TempDir()
	local, _ := vdisk.Connect(ctx, vdisk.ConnectParams{})
	img := filepath.Join(dir, "web-scsi0-0.vmdk")
	if err := local.Create(ctx, vdisk.Spec{Path: img}, vdisk.CreateParams{Capacity: 64 << 20}); err != nil {
		t.Fatal(err)
	}
	write := func(c *vdisk.Conn, spec vdisk.Spec, seed uint64) {
		h, err := c.Open(ctx, spec, 0)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(seed, 1))
		for range 40 {
			p := make([]byte, (1+rng.Int64N(8))*4096)
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
			if _, err := h.WriteAt(p, rng.Int64N((64<<20-int64(len(p)))/4096)*4096); err != nil {
				t.Fatal(err)
			}
		}
		h.WriteZeroes(8<<20, 1<<20, 0)
		if err := h.Close(); err != nil {
			t.Fatal(err)
		}
	}
	write(local, vdisk.Spec{Path: img}, 1)
	host, err := vdisk.Connect(ctx, vdisk.ConnectParams{Server: api[0], User: "admin", Password: pw, Thumbprint: s.Thumbprint()})
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	if _, err := s.Store().CreateVM("web"); err != nil {
		t.Fatal(err)
	}
	if _, err := vdisk.Clone(ctx, host, vdisk.Spec{Disk: "web-scsi0-0"}, local, vdisk.Spec{Path: img}, &vdisk.CloneOptions{Create: vdisk.CreateParams{CBT: true}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Store().Attach("web", "scsi0:0", "web-scsi0-0"); err != nil {
		t.Fatal(err)
	}

	modes := []string{"file", "direct", "nbdssl", "nbd"}
	backup := func(round int) map[string]string {
		outs := map[string]string{}
		for _, m := range modes {
			repo := filepath.Join(dir, "repo-"+m)
			args := []string{"-repo", repo}
			if m == "file" {
				args = append(args, "-file", img)
			} else {
				args = append(args, "-server", api[0], "-thumbprint", s.Thumbprint(), "-user", "admin", "-vm", "web", "-transports", m)
			}
			var out bytes.Buffer
			if err := run(ctx, args, &out); err != nil {
				t.Fatalf("round %d, %s: %v", round, m, err)
			}
			t.Logf("round %d, %s: %s", round, m, strings.TrimSpace(out.String()))
			if m != "file" && !strings.Contains(out.String(), "over "+m) {
				t.Errorf("round %d: %s backup used another mode: %s", round, m, out.String())
			}
			if round > 0 && m != "file" && !strings.Contains(out.String(), "incremental") {
				t.Errorf("round %d: %s backup was not incremental: %s", round, m, out.String())
			}
			b := readPoint(t, repo)
			outs[m] = string(b)
		}
		// The reference: the disk itself, read through the host.
		h, err := host.Open(ctx, vdisk.Spec{Disk: "web-scsi0-0"}, vdisk.OpenReadOnly)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]byte, h.Size())
		h.ReadAt(want, 0)
		h.Close()
		for m, got := range outs {
			if got != string(want) {
				t.Errorf("round %d: the %s backup differs from the disk", round, m)
			}
		}
		return outs
	}
	backup(0)
	// Change the disk on both sides identically, then back up again.
	write(local, vdisk.Spec{Path: img}, 2)
	write(host, vdisk.Spec{Disk: "web-scsi0-0"}, 2)
	backup(1)
}

// readPoint reads the disk of the repository's newest point.
func readPoint(t *testing.T, dir string) []byte {
	t.Helper()
	ctx := context.Background()
	repo, err := openRepo(ctx, dir, []byte("repo password"))
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	ps, err := repo.Points(ctx)
	if err != nil || len(ps) == 0 {
		t.Fatalf("points: %v %v", ps, err)
	}
	p := ps[0]
	for _, q := range ps {
		if q.Time.After(p.Time) {
			p = q
		}
	}
	d, err := repo.OpenDisk(ctx, p, p.Disks[0].Name)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	b := make([]byte, d.Size())
	if _, err := d.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}
