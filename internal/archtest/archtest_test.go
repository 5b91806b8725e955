// Package archtest keeps the import structure that DESIGN.md describes:
// imports run downward only, and the low packages stay free of heavy
// dependencies.
package archtest

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/vdisk-project/vdisk"

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "-json", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func rel(path string) string { return strings.TrimPrefix(strings.TrimPrefix(path, module), "/") }

// allowed lists, for each layer (by path prefix), the vdisk packages it may
// import.
var allowed = []struct {
	prefix string
	may    []string
}{
	{"disk/disktest", []string{"disk"}},
	{"disk", []string{}},
	{"format/raw", []string{"disk"}},
	{"format/vmdk", []string{"disk"}},
	{"format", []string{"disk", "format/raw", "format/vmdk"}},
	{"nbd/nbdtest", []string{"disk", "nbd"}},
	{"nbd", []string{"disk"}},
	{"hostapi", []string{}},
	// volume reads any disk.Disk: a local image, an NBD export, a host
	// disk, a backup point.
	// Its sub-packages (partition schemes, LVM, one reader per
	// filesystem) import only disk and each other (volume/inode is their
	// shared contract).
	{"volume", []string{"disk", "volume"}},
	// backup/storage holds objects; it knows nothing of disks but the
	// error codes.
	// storagetest starts S3 servers found the way peer tools are.
	{"backup/storage/storagetest", []string{"disk", "backup/storage", "internal/testenv"}},
	{"backup/storage", []string{"disk", "backup/storage"}},
	// backup imports the kit, never the host's storage engine.
	{"backup", []string{"", "disk", "format", "nbd", "hostapi", "backup", "volume"}},
	{"internal/datastore", []string{"disk", "format", "internal/cbt", "hostapi"}},
	{"internal/cbt", []string{"disk", "format"}},
	// auth may use nbd (a low layer, like format) for the one certificate
	// pinning implementation, nbd.PinnedTLSConfig.
	{"internal/auth", []string{"disk", "format", "nbd"}},
	{"server/servertest", []string{"server"}},
	{"server", []string{"disk", "format", "nbd", "hostapi", "internal/datastore", "internal/cbt", "internal/auth", "internal/hostclient"}},
	{"internal/conffile", []string{"disk"}},
	// hostclient sits with the kit, above nbd (its trust settings come
	// from nbd.Trust), and decodes hostapi's wire types: it links no
	// storage engine.
	{"internal/hostclient", []string{"disk", "nbd", "hostapi"}},
	// The C library is a thin cgo layer over the kit: it may import
	// everything below the CLI, like internal/cli, but not the CLI.
	{"cmd/libvixdisklib", []string{"", "disk", "format", "nbd", "hostapi", "internal/conffile", "internal/hostclient", "server"}},
	// The root package (the kit) may not import server or the CLI.
	{"", []string{"disk", "format", "nbd", "hostapi", "internal/hostclient", "internal/conffile"}},
}

func TestLayering(t *testing.T) {
	for _, p := range listPackages(t) {
		name := rel(p.ImportPath)
		for _, rule := range allowed {
			if name != rule.prefix && !strings.HasPrefix(name, rule.prefix+"/") {
				continue
			}
			for _, imp := range p.Imports {
				if !strings.HasPrefix(imp, module) {
					continue
				}
				ok := false
				for _, m := range rule.may {
					if r := rel(imp); r == m || strings.HasPrefix(r, m+"/") && m != "disk" {
						ok = true
					}
				}
				if !ok {
					t.Errorf("%s imports %s: not allowed by the layering in DESIGN.md", name, rel(imp))
				}
			}
			break
		}
	}
}

// TestDependencies keeps disk, format and nbd free of heavy third-party
// modules.
func TestDependencies(t *testing.T) {
	light := []string{"golang.org/x/sync/", "golang.org/x/sys/"}
	for _, p := range listPackages(t) {
		name := rel(p.ImportPath)
		if !strings.HasPrefix(name, "disk") && !strings.HasPrefix(name, "format") && !strings.HasPrefix(name, "nbd") {
			continue
		}
		for _, d := range p.Deps {
			if !strings.Contains(strings.SplitN(d, "/", 2)[0], ".") || strings.HasPrefix(d, module) {
				continue // standard library or ours
			}
			ok := false
			for _, l := range light {
				if strings.HasPrefix(d, l) {
					ok = true
				}
			}
			if !ok {
				t.Errorf("%s depends on %s: keep the low layers light", name, d)
			}
		}
	}
}
