package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/internal/testenv"
)

// The keys where vdisk's JSON and qemu-img's may differ, and why. Every
// other key must be present in both with the same value and JSON type.
var qemuJSONExceptions = map[string]string{
	// info: vdisk's own facts (adapter, hardware version, geometry, UUID,
	// the data bytes an image holds), for which qemu-img has no key.
	"vdisk-extras": "vdisk-only key",
	// map: qemu-img prints "compressed" on every entry since 8.2; older
	// versions (Debian 12 has 7.2) print no such key. vdisk prints it as
	// 8.2 does; when qemu-img lacks it, vdisk's value is checked against
	// the entry instead (compressed exactly when data has no offset).
	"compressed": "added in qemu 8.2",
	// info of an NBD export: vdisk names it as given, qemu-img rewrites the
	// URI in its own form (nbd+unix:///?socket=S becomes nbd+unix://?socket=S).
	"filename": "NBD URIs only",
}

// qemuWrites are qemu-io commands that leave data, zero and hole runs: data,
// a zero write (a zeroed grain where the image has them, written zeros in
// a flat file), data that is all zeros, and data across an extent boundary
// of the split subformats (2047 MiB) when the image is that large.
func qemuWrites(size int64) []string {
	w := []string{"write -P 1 1M 1M", "write -z 4M 1M", "write -P 0 8M 64k", "write -P 5 20M 128k", "write -P 6 30M 4k"}
	if size > 2047<<20 {
		w = append(w, fmt.Sprintf("write -P 7 %d 128k", 2047<<20-64<<10), "write -P 8 4G 64k")
	}
	return w
}

func qemuIOCmds(t *testing.T, format, img string, cmds []string) {
	t.Helper()
	args := []string{"-f", format}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	testenv.Run(t, "qemu-io", append(args, img)...)
}

// qemuOut runs qemu-img and returns its stdout alone, its stderr and
// whether it succeeded.
func qemuOut(t *testing.T, args ...string) (string, string, bool) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(testenv.Tool(t, "qemu-img"), args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err == nil
}

// TestQemuJSONAgrees checks that scripts written for qemu-img read vdisk's
// info and map output unchanged: on images of every subformat vdisk creates
// (and the ones qemu-img creates), a delta and raw files, after qemu-io
// wrote data, zeros and left holes, the two tools' JSON agree key by key
// (except qemuJSONExceptions), and their human maps are the same text.
func TestQemuJSONAgrees(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	testenv.Tool(t, "qemu-io")
	dir := t.TempDir()
	type image struct {
		name, format string
	}
	var images []image
	add := func(name, format string, size int64, make func(path string)) {
		p := filepath.Join(dir, name)
		make(p)
		qemuIOCmds(t, format, p, qemuWrites(size))
		images = append(images, image{p, format})
	}
	for _, tc := range []struct {
		sub  string
		size int64
		opts string
	}{
		{"monolithicSparse", 64 << 20, ""},
		{"monolithicSparse", 64 << 20, ",zeroed_grain=on"},
		{"monolithicFlat", 64 << 20, ""},
		{"twoGbMaxExtentSparse", 5 << 30, ""},
		{"twoGbMaxExtentFlat", 5 << 30, ""},
		{"vmfs", 64 << 20, ""},
		{"vmfsThin", 64 << 20, ""},
	} {
		name := "v-" + tc.sub + strings.ReplaceAll(tc.opts, ",zeroed_grain=on", "-zg") + ".vmdk"
		add(name, "vmdk", tc.size, func(p string) {
			mustRun(t, "create", "-f", "vmdk", "-o", "subformat="+tc.sub+tc.opts, p, fmt.Sprint(tc.size))
		})
		if tc.sub != "vmfs" && tc.sub != "vmfsThin" {
			add("q-"+name[2:], "vmdk", tc.size, func(p string) {
				testenv.Run(t, "qemu-img", "create", "-f", "vmdk", "-o", "subformat="+tc.sub+tc.opts, p, fmt.Sprint(tc.size))
			})
		}
	}
	add("v.raw", "raw", 64<<20, func(p string) { mustRun(t, "create", "-f", "raw", p, "64M") })
	add("q.raw", "raw", 64<<20, func(p string) { testenv.Run(t, "qemu-img", "create", "-f", "raw", p, "64M") })
	// streamOptimized cannot be written in place: convert written raw data.
	for _, who := range []string{"v", "q"} {
		p := filepath.Join(dir, who+"-streamOptimized.vmdk")
		src := filepath.Join(dir, who+".raw")
		if who == "v" {
			mustRun(t, "convert", "-O", "vmdk", "-o", "subformat=streamOptimized", src, p)
		} else {
			testenv.Run(t, "qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized", src, p)
		}
		images = append(images, image{p, "vmdk"})
	}
	// Deltas: a child written over a written parent, made by each tool.
	for _, who := range []string{"v", "q"} {
		child := filepath.Join(dir, who+"-child.vmdk")
		base := filepath.Join(dir, who+"-monolithicSparse.vmdk")
		if who == "v" {
			mustRun(t, "create", "-f", "vmdk", "-b", base, child)
		} else {
			testenv.Run(t, "qemu-img", "create", "-f", "vmdk", "-b", base, "-F", "vmdk", child)
		}
		qemuIOCmds(t, "vmdk", child, []string{"write -P 2 512k 1M", "write -P 3 3M 64k", "write -z 20M 64k"})
		images = append(images, image{child, "vmdk"})
	}

	for _, img := range images {
		t.Run(filepath.Base(img.name), func(t *testing.T) {
			args := [][]string{{"info", "--output=json"}, {"map", "--output=json"}}
			if strings.HasSuffix(img.name, "child.vmdk") {
				args = append(args, []string{"info", "--backing-chain", "--output=json"})
			}
			for _, a := range args {
				theirs, errs, ok := qemuOut(t, append(a, img.name)...)
				if !ok {
					t.Fatalf("qemu-img %v %s: %s", a, img.name, errs)
				}
				ours := mustRun(t, append(a, img.name)...)
				compareJSON(t, strings.Join(a, " "), theirs, ours)
			}
			// Relative names, as a user types them in the image's directory.
			if strings.HasSuffix(img.name, "child.vmdk") {
				t.Chdir(dir)
				for _, rel := range []string{filepath.Base(img.name), "./" + filepath.Base(img.name)} {
					a := []string{"info", "--backing-chain", "--output=json", rel}
					theirs, errs, ok := qemuOut(t, a...)
					if !ok {
						t.Fatalf("qemu-img %v: %s", a, errs)
					}
					compareJSON(t, strings.Join(a, " "), theirs, mustRun(t, a...))
				}
			}
			// The human info: qemu-img's text, then vdisk's own block.
			theirsInfo, errs, ok := qemuOut(t, "info", img.name)
			if !ok {
				t.Fatalf("qemu-img info %s: %s", img.name, errs)
			}
			if ours := mustRun(t, "info", img.name); !strings.HasPrefix(ours, theirsInfo) || !strings.HasPrefix(ours[len(theirsInfo):], "vdisk information:\n") {
				t.Errorf("human info differs:\nqemu-img:\n%svdisk:\n%s", theirsInfo, ours)
			}
			// The human map: the same text, or the same refusal.
			theirs, _, ok := qemuOut(t, "map", img.name)
			ours, errs, code := run(t, "map", img.name)
			if ours != theirs || ok != (code == 0) {
				t.Errorf("human map differs (qemu-img ok %v, vdisk exit %d %s):\nqemu-img:\n%svdisk:\n%s", ok, code, errs, theirs, ours)
			}
		})
	}
}

// TestQemuJSONAgreesNBD checks info and map of an NBD export (qemu-nbd
// serving a written raw file) against qemu-img's.
func TestQemuJSONAgreesNBD(t *testing.T) {
	testenv.Tool(t, "qemu-img")
	testenv.Tool(t, "qemu-io")
	testenv.Tool(t, "qemu-nbd")
	dir := t.TempDir()
	img := filepath.Join(dir, "n.raw")
	testenv.Run(t, "qemu-img", "create", "-f", "raw", img, "64M")
	qemuIOCmds(t, "raw", img, qemuWrites(64<<20))
	sock, pidFile := filepath.Join(dir, "n.sock"), filepath.Join(dir, "n.pid")
	// --fork returns once the socket is ready.
	testenv.Run(t, "qemu-nbd", "--fork", "--pid-file="+pidFile, "-t", "-r", "-f", "raw", "-k", sock, img)
	t.Cleanup(func() {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			t.Errorf("qemu-nbd pid file: %v", err)
			return
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Errorf("qemu-nbd pid file %q: %v", b, err)
			return
		}
		if p, err := os.FindProcess(pid); err == nil {
			p.Kill()
		}
	})
	uri := "nbd+unix:///?socket=" + sock
	for _, a := range [][]string{{"info", "--output=json"}, {"map", "--output=json"}} {
		theirs, errs, ok := qemuOut(t, append(a, uri)...)
		if !ok {
			t.Fatalf("qemu-img %v %s: %s", a, uri, errs)
		}
		ours := mustRun(t, append(a, uri)...)
		compareJSON(t, strings.Join(a, " "), theirs, ours)
	}
}

// compareJSON compares qemu-img's JSON with vdisk's key by key.
func compareJSON(t *testing.T, what, theirs, ours string) {
	t.Helper()
	var a, b any
	if err := json.Unmarshal([]byte(theirs), &a); err != nil {
		t.Fatalf("qemu-img %s: %v\n%s", what, err, theirs)
	}
	if err := json.Unmarshal([]byte(ours), &b); err != nil {
		t.Fatalf("vdisk %s: %v\n%s", what, err, ours)
	}
	var diffs []string
	diffJSON("", a, b, &diffs)
	if len(diffs) > 0 {
		t.Errorf("%s: vdisk differs from qemu-img:\n  %s\nqemu-img:\n%s\nvdisk:\n%s", what, strings.Join(diffs, "\n  "), theirs, ours)
	}
}

func diffJSON(path string, a, b any, diffs *[]string) {
	switch a := a.(type) {
	case map[string]any:
		bm, ok := b.(map[string]any)
		if !ok {
			*diffs = append(*diffs, fmt.Sprintf("%s: qemu-img has an object, vdisk %#v", path, b))
			return
		}
		keys := map[string]bool{}
		for k := range a {
			keys[k] = true
		}
		for k := range bm {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			av, inA := a[k]
			bv, inB := bm[k]
			p := path + "." + k
			switch {
			case inA && inB && k == "filename" && strings.HasPrefix(fmt.Sprint(bv), "nbd"):
				// qemuJSONExceptions: NBD URIs are named differently.
			case inA && inB:
				diffJSON(p, av, bv, diffs)
			case inB && qemuJSONExceptions[k] != "":
				if k == "compressed" {
					// qemu-img before 8.2: check the value against the entry.
					_, hasOffset := bm["offset"]
					if want := bm["data"] == true && !hasOffset; bv != want {
						*diffs = append(*diffs, fmt.Sprintf("%s: vdisk %v, want %v (data without an offset)", p, bv, want))
					}
				}
			case inA:
				*diffs = append(*diffs, fmt.Sprintf("%s: only qemu-img has it (%v)", p, av))
			default:
				*diffs = append(*diffs, fmt.Sprintf("%s: only vdisk has it (%v)", p, bv))
			}
		}
	case []any:
		bl, ok := b.([]any)
		if !ok || len(bl) != len(a) {
			*diffs = append(*diffs, fmt.Sprintf("%s: qemu-img has %d items, vdisk %v", path, len(a), b))
			return
		}
		for i := range a {
			diffJSON(fmt.Sprintf("%s[%d]", path, i), a[i], bl[i], diffs)
		}
	default:
		if !reflect.DeepEqual(a, b) {
			*diffs = append(*diffs, fmt.Sprintf("%s: qemu-img %#v, vdisk %#v", path, a, b))
		}
	}
}
