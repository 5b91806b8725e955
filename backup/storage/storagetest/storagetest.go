// Package storagetest checks that a [storage.Storage] keeps the contract
// that package storage documents, and starts real S3 servers for the tests
// of the s3 package.
//
// # Conformance
//
// Every implementation runs [RunTests] from its own test:
//
//	func TestConformance(t *testing.T) {
//		storagetest.RunTests(t, func(t *testing.T) storage.Storage { return mem.New() })
//	}
//
// The factory is called once per subtest and must return an empty store
// that the subtest may fill; it registers its own cleanup with t.Cleanup.
//
// # S3 servers
//
// [Versitygw] and [MinIO] start a server on a loopback port in a temporary
// directory and stop it when the test ends. The binaries are found with
// internal/testenv: a missing one skips the test unless VDISK_TEST_REQUIRE
// names it.
package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/backup/storage"
	"github.com/vdisk-project/vdisk/disk"
)

// RunTests runs the conformance suite against the stores newStorage
// returns, one fresh store per subtest.
func RunTests(t *testing.T, newStorage func(t *testing.T) storage.Storage) {
	tests := []struct {
		name string
		fn   func(t *testing.T, st storage.Storage)
	}{
		{"PutGet", testPutGet},
		{"Overwrite", testOverwrite},
		{"Empty", testEmpty},
		{"Names", testNames},
		{"ReadAt", testReadAt},
		{"Stat", testStat},
		{"GetMax", testGetMax},
		{"Missing", testMissing},
		{"InvalidNames", testInvalidNames},
		{"Delete", testDelete},
		{"List", testList},
		{"ListMany", testListMany},
		{"ListStop", testListStop},
		{"ConcurrentDistinct", testConcurrentDistinct},
		{"ConcurrentSame", testConcurrentSame},
		{"Canceled", testCanceled},
		{"Large", testLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newStorage(t)
			tt.fn(t, st)
		})
	}
}

// Data returns n bytes that depend on seed, so that objects differ.
func Data(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

func put(t *testing.T, st storage.Storage, name string, data []byte) {
	t.Helper()
	if err := st.Put(context.Background(), name, data); err != nil {
		t.Fatalf("Put(%q, %d bytes): %v", name, len(data), err)
	}
}

func get(t *testing.T, st storage.Storage, name string) []byte {
	t.Helper()
	b, err := st.Get(context.Background(), name, 1<<30)
	if err != nil {
		t.Fatalf("Get(%q): %v", name, err)
	}
	return b
}

func listAll(t *testing.T, st storage.Storage, prefix string) map[string]storage.Info {
	t.Helper()
	got := map[string]storage.Info{}
	err := st.List(context.Background(), prefix, func(in storage.Info) error {
		if _, dup := got[in.Name]; dup {
			return fmt.Errorf("name %q listed twice", in.Name)
		}
		got[in.Name] = in
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return got
}

func names(m map[string]storage.Info) []string {
	var s []string
	for n := range m {
		s = append(s, n)
	}
	sort.Strings(s)
	return s
}

func testPutGet(t *testing.T, st storage.Storage) {
	data := Data(1, 100_000)
	buf := bytes.Clone(data)
	put(t, st, "obj", buf)
	buf[0] ^= 0xff // Put must not retain the caller's buffer
	got := get(t, st, "obj")
	if !bytes.Equal(got, data) {
		t.Fatalf("Get after Put: got %d bytes, want the %d put", len(got), len(data))
	}
	got[1] ^= 0xff // nor share the returned one
	if again := get(t, st, "obj"); !bytes.Equal(again, data) {
		t.Fatal("changing the slice Get returned changed the stored object")
	}
}

func testOverwrite(t *testing.T, st storage.Storage) {
	put(t, st, "x", Data(2, 5000))
	want := Data(3, 300)
	put(t, st, "x", want)
	if got := get(t, st, "x"); !bytes.Equal(got, want) {
		t.Fatalf("after a second Put got %d bytes, want the last Put's %d", len(got), len(want))
	}
	if in, err := st.Stat(context.Background(), "x"); err != nil || in.Size != int64(len(want)) {
		t.Fatalf("Stat after overwrite = %+v, %v; want size %d", in, err, len(want))
	}
	if l := listAll(t, st, ""); len(l) != 1 {
		t.Fatalf("List after overwrite = %v, want one object", names(l))
	}
}

func testEmpty(t *testing.T, st storage.Storage) {
	put(t, st, "empty", nil)
	got, err := st.Get(context.Background(), "empty", 0)
	if err != nil || len(got) != 0 {
		t.Fatalf("Get(empty, max 0) = %d bytes, %v; want 0, nil", len(got), err)
	}
	in, err := st.Stat(context.Background(), "empty")
	if err != nil || in.Size != 0 || in.Name != "empty" {
		t.Fatalf("Stat(empty) = %+v, %v", in, err)
	}
	if l := listAll(t, st, ""); len(l) != 1 || l["empty"].Size != 0 {
		t.Fatalf("List = %v, want the empty object", l)
	}
	var p [1]byte
	if _, err := st.ReadAt(context.Background(), "empty", p[:], 0); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("ReadAt(empty, 1 byte) error = %v, want io.ErrUnexpectedEOF", err)
	}
}

func testNames(t *testing.T, st storage.Storage) {
	all := "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
	valid := []string{
		"a", all, "data/00/" + strings.Repeat("f", 64), "x/y/z/w/v", ".hidden", "a..b",
		"long/" + strings.Repeat("n", storage.MaxNameLen-5),
	}
	for i, n := range valid {
		if !storage.ValidName(n) {
			t.Fatalf("test bug: %q is not a valid name", n)
		}
		put(t, st, n, Data(uint64(10+i), i*7))
	}
	got := listAll(t, st, "")
	if want := slices.Sorted(slices.Values(valid)); !slices.Equal(names(got), want) {
		t.Fatalf("List = %q, want %q", names(got), want)
	}
	for i, n := range valid {
		if b := get(t, st, n); !bytes.Equal(b, Data(uint64(10+i), i*7)) {
			t.Errorf("Get(%q) returned other data", n)
		}
		if got[n].Size != int64(i*7) {
			t.Errorf("List size of %q = %d, want %d", n, got[n].Size, i*7)
		}
	}
}

func testReadAt(t *testing.T, st storage.Storage) {
	const size = 10_000
	data := Data(4, size)
	put(t, st, "r", data)
	ctx := context.Background()
	for _, c := range []struct {
		off   int64
		n     int
		short bool
	}{
		{0, size, false}, {0, 1, false}, {size - 1, 1, false}, {1234, 4321, false},
		{size - 10, 20, true}, {size, 1, true}, {size + 100, 10, true}, {0, size + 1, true},
	} {
		p := make([]byte, c.n)
		n, err := st.ReadAt(ctx, "r", p, c.off)
		want := 0
		if c.off < size {
			want = min(c.n, size-int(c.off))
		}
		if n != want {
			t.Errorf("ReadAt(%d bytes @%d) = %d bytes, want %d", c.n, c.off, n, want)
		}
		if !bytes.Equal(p[:n], data[min(c.off, size):min(c.off, size)+int64(n)]) {
			t.Errorf("ReadAt(%d bytes @%d) returned other data", c.n, c.off)
		}
		if c.short {
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("ReadAt(%d bytes @%d) past the end of %d: error %v, want io.ErrUnexpectedEOF", c.n, c.off, size, err)
			}
		} else if err != nil {
			t.Errorf("ReadAt(%d bytes @%d): %v", c.n, c.off, err)
		}
	}
	if _, err := st.ReadAt(ctx, "r", make([]byte, 1), -1); !errors.Is(err, disk.ErrInvalid) {
		t.Errorf("ReadAt @-1: error %v, want disk.ErrInvalid", err)
	}
}

func testStat(t *testing.T, st storage.Storage) {
	before := time.Now()
	put(t, st, "dir/s", Data(5, 777))
	in, err := st.Stat(context.Background(), "dir/s")
	if err != nil {
		t.Fatal(err)
	}
	if in.Name != "dir/s" || in.Size != 777 {
		t.Errorf("Stat = %+v, want name dir/s, size 777", in)
	}
	// Clocks of a remote store may differ from ours; allow a day.
	if d := in.ModTime.Sub(before); d < -24*time.Hour || d > 24*time.Hour {
		t.Errorf("Stat ModTime %v is far from the time of Put %v", in.ModTime, before)
	}
	// A "directory" of names is not an object.
	if _, err := st.Stat(context.Background(), "dir"); !errors.Is(err, disk.ErrNotFound) {
		t.Errorf("Stat(dir) of a name prefix: error %v, want disk.ErrNotFound", err)
	}
}

func testGetMax(t *testing.T, st storage.Storage) {
	data := Data(6, 4096)
	put(t, st, "m", data)
	ctx := context.Background()
	if b, err := st.Get(ctx, "m", 4096); err != nil || !bytes.Equal(b, data) {
		t.Errorf("Get(max = size) = %d bytes, %v", len(b), err)
	}
	for _, max := range []int64{4095, 1, 0} {
		b, err := st.Get(ctx, "m", max)
		if !errors.Is(err, disk.ErrOutOfMemory) || b != nil {
			t.Errorf("Get(4096-byte object, max %d) = %d bytes, %v; want nil, disk.ErrOutOfMemory", max, len(b), err)
		}
	}
}

func wantNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, disk.ErrNotFound) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s: error %v, want disk.ErrNotFound matching fs.ErrNotExist", what, err)
	}
}

func testMissing(t *testing.T, st storage.Storage) {
	ctx := context.Background()
	put(t, st, "present/x", []byte("x"))
	for _, name := range []string{"nope", "present/nope", "deep/er/nope", "present/x/below"} {
		_, err := st.Get(ctx, name, 100)
		wantNotFound(t, "Get("+name+")", err)
		_, err = st.ReadAt(ctx, name, make([]byte, 1), 0)
		wantNotFound(t, "ReadAt("+name+")", err)
		_, err = st.Stat(ctx, name)
		wantNotFound(t, "Stat("+name+")", err)
	}
}

func testInvalidNames(t *testing.T, st storage.Storage) {
	ctx := context.Background()
	bad := []string{
		"", "/", "/abs", "trailing/", "a//b", ".", "..", "../up", "a/../b", "a/./b", "sp ace",
		"back\\slash", "nul\x00", "ü", "star*", "a/~tmp", strings.Repeat("n", storage.MaxNameLen+1),
	}
	for _, name := range bad {
		if storage.ValidName(name) {
			t.Fatalf("test bug: %q is a valid name", name)
		}
		check := func(op string, err error) {
			t.Helper()
			if !errors.Is(err, disk.ErrInvalid) {
				t.Errorf("%s(%q): error %v, want disk.ErrInvalid", op, name, err)
			}
		}
		check("Put", st.Put(ctx, name, []byte("data")))
		_, err := st.Get(ctx, name, 100)
		check("Get", err)
		_, err = st.ReadAt(ctx, name, make([]byte, 1), 0)
		check("ReadAt", err)
		_, err = st.Stat(ctx, name)
		check("Stat", err)
		check("Delete", st.Delete(ctx, name))
	}
	if l := listAll(t, st, ""); len(l) != 0 {
		t.Fatalf("after Puts of invalid names the store lists %q, want nothing", names(l))
	}
	// A prefix is not a name: one that climbs out or that no name can
	// start with lists nothing.
	for _, p := range []string{"../", "..", "./", "/", "a//", "sp ace", "a/./"} {
		if l := listAll(t, st, p); len(l) != 0 {
			t.Errorf("List(%q) = %q, want nothing", p, names(l))
		}
	}
	// A last element may start with dots.
	put(t, st, "d/..x", []byte("x"))
	put(t, st, "d/.y", []byte("y"))
	put(t, st, "d/z", []byte("z"))
	for p, want := range map[string][]string{"d/.": {"d/..x", "d/.y"}, "d/..": {"d/..x"}, "d/": {"d/..x", "d/.y", "d/z"}} {
		if l := listAll(t, st, p); !slices.Equal(names(l), want) {
			t.Errorf("List(%q) = %q, want %q", p, names(l), want)
		}
	}
}

func testDelete(t *testing.T, st storage.Storage) {
	ctx := context.Background()
	put(t, st, "d/1", []byte("one"))
	put(t, st, "d/2", []byte("two"))
	if err := st.Delete(ctx, "d/1"); err != nil {
		t.Fatalf("Delete(d/1): %v", err)
	}
	_, err := st.Get(ctx, "d/1", 100)
	wantNotFound(t, "Get after Delete", err)
	if err := st.Delete(ctx, "d/1"); err != nil {
		t.Errorf("second Delete(d/1): %v, want nil", err)
	}
	if err := st.Delete(ctx, "never/was"); err != nil {
		t.Errorf("Delete(never/was): %v, want nil", err)
	}
	// "d" is no object, only the start of other names.
	if err := st.Delete(ctx, "d"); err != nil {
		t.Errorf("Delete(d) with d/2 stored: %v, want nil", err)
	}
	if l := listAll(t, st, ""); !slices.Equal(names(l), []string{"d/2"}) {
		t.Errorf("List after Delete = %q, want [d/2]", names(l))
	}
	if got := get(t, st, "d/2"); string(got) != "two" {
		t.Errorf("Get(d/2) = %q after deleting d/1", got)
	}
}

func testList(t *testing.T, st storage.Storage) {
	all := []string{"index/a", "index/b", "indexes", "data/00/x", "data/00/y", "data/01/z", "data/0", "keys/k", "config"}
	for i, n := range all {
		put(t, st, n, Data(uint64(100+i), i))
	}
	for _, c := range []struct {
		prefix string
		want   []string
	}{
		{"", all},
		{"index/", []string{"index/a", "index/b"}},
		{"index", []string{"index/a", "index/b", "indexes"}},
		{"data/", []string{"data/0", "data/00/x", "data/00/y", "data/01/z"}},
		{"data/0", []string{"data/0", "data/00/x", "data/00/y", "data/01/z"}},
		{"data/00", []string{"data/00/x", "data/00/y"}},
		{"data/00/", []string{"data/00/x", "data/00/y"}},
		{"data/00/x", []string{"data/00/x"}},
		{"c", []string{"config"}},
		{"config", []string{"config"}},
		{"configs", nil},
		{"nothing/", nil},
		{"z", nil},
	} {
		got := listAll(t, st, c.prefix)
		want := slices.Sorted(slices.Values(c.want))
		if !slices.Equal(names(got), want) {
			t.Errorf("List(%q) = %q, want %q", c.prefix, names(got), want)
		}
		for n, in := range got {
			i := slices.Index(all, n)
			if in.Size != int64(i) {
				t.Errorf("List(%q): %s has size %d, want %d", c.prefix, n, in.Size, i)
			}
			if in.ModTime.IsZero() {
				t.Errorf("List(%q): %s has no ModTime", c.prefix, n)
			}
		}
	}
}

// manyObjects is more than one page of an S3 listing (1000 keys).
const manyObjects = 1100

func putMany(t *testing.T, st storage.Storage, names []string, data func(i int) []byte) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	next := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range next {
				errs[i] = st.Put(context.Background(), names[i], data(i))
			}
		})
	}
	for i := range names {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

func testListMany(t *testing.T, st storage.Storage) {
	var all []string
	for i := range manyObjects {
		all = append(all, fmt.Sprintf("many/%02x/%06d", i%7, i))
	}
	put(t, st, "other", []byte("x"))
	putMany(t, st, all, func(i int) []byte { return []byte(fmt.Sprint(i)) })
	got := listAll(t, st, "many/")
	if len(got) != manyObjects {
		t.Fatalf("List(many/) gave %d objects, want %d", len(got), manyObjects)
	}
	for i, n := range all {
		if in, ok := got[n]; !ok || in.Size != int64(len(fmt.Sprint(i))) {
			t.Fatalf("List(many/): %s = %+v, %v", n, in, ok)
		}
	}
	if got := listAll(t, st, ""); len(got) != manyObjects+1 {
		t.Fatalf("List() gave %d objects, want %d", len(got), manyObjects+1)
	}
}

func testListStop(t *testing.T, st storage.Storage) {
	for i := range 5 {
		put(t, st, fmt.Sprintf("s/%d", i), nil)
	}
	stop := errors.New("stop here")
	calls := 0
	err := st.List(context.Background(), "s/", func(storage.Info) error {
		calls++
		return stop
	})
	if !errors.Is(err, stop) {
		t.Errorf("List with fn failing: error %v, want fn's error", err)
	}
	if calls != 1 {
		t.Errorf("List called fn %d times after it failed, want 1", calls)
	}
}

func testConcurrentDistinct(t *testing.T, st storage.Storage) {
	var all []string
	for i := range 64 {
		all = append(all, fmt.Sprintf("c/%02d/%d", i%4, i))
	}
	putMany(t, st, all, func(i int) []byte { return Data(uint64(i), 1000+i) })
	var wg sync.WaitGroup
	for i, n := range all {
		wg.Go(func() {
			b, err := st.Get(context.Background(), n, 1<<20)
			if err != nil || !bytes.Equal(b, Data(uint64(i), 1000+i)) {
				t.Errorf("Get(%s) after concurrent Puts: %d bytes, %v", n, len(b), err)
			}
		})
	}
	wg.Wait()
	if got := listAll(t, st, "c/"); len(got) != len(all) {
		t.Errorf("List(c/) gave %d objects, want %d", len(got), len(all))
	}
}

func testConcurrentSame(t *testing.T, st storage.Storage) {
	const writers = 16
	versions := make([][]byte, writers)
	for i := range versions {
		versions[i] = Data(uint64(1000+i), 64<<10+i)
	}
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			if err := st.Put(context.Background(), "same/obj", versions[i]); err != nil {
				t.Errorf("concurrent Put %d: %v", i, err)
			}
		})
		// Readers meanwhile see some version whole, or nothing yet.
		wg.Go(func() {
			b, err := st.Get(context.Background(), "same/obj", 1<<20)
			if errors.Is(err, disk.ErrNotFound) {
				return
			}
			if err != nil {
				t.Errorf("Get during concurrent Puts: %v", err)
			} else if !slices.ContainsFunc(versions, func(v []byte) bool { return bytes.Equal(v, b) }) {
				t.Errorf("Get during concurrent Puts returned %d bytes that no Put wrote", len(b))
			}
		})
	}
	wg.Wait()
	b := get(t, st, "same/obj")
	if !slices.ContainsFunc(versions, func(v []byte) bool { return bytes.Equal(v, b) }) {
		t.Fatalf("after concurrent Puts of one name Get returned %d bytes that no Put wrote", len(b))
	}
	if got := listAll(t, st, ""); !slices.Equal(names(got), []string{"same/obj"}) {
		t.Fatalf("List after concurrent Puts = %q, want [same/obj]", names(got))
	}
}

func testCanceled(t *testing.T, st storage.Storage) {
	put(t, st, "c/kept", []byte("kept"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a canceled context: error %v, want context.Canceled", op, err)
		}
	}
	check("Put", st.Put(ctx, "c/new", []byte("new")))
	_, err := st.Get(ctx, "c/kept", 100)
	check("Get", err)
	_, err = st.ReadAt(ctx, "c/kept", make([]byte, 2), 0)
	check("ReadAt", err)
	_, err = st.Stat(ctx, "c/kept")
	check("Stat", err)
	check("List", st.List(ctx, "", func(storage.Info) error { return nil }))
	check("Delete", st.Delete(ctx, "c/kept"))

	if l := listAll(t, st, ""); !slices.Equal(names(l), []string{"c/kept"}) {
		t.Errorf("after canceled calls the store lists %q, want [c/kept]", names(l))
	}
	// Canceling during a listing stops it.
	for i := range 20 {
		put(t, st, fmt.Sprintf("c/l%d", i), nil)
	}
	ctx, cancel = context.WithCancel(context.Background())
	calls := 0
	err = st.List(ctx, "c/", func(storage.Info) error {
		calls++
		cancel()
		return nil
	})
	check("List canceled by fn", err)
	if calls > 2 {
		// An implementation may deliver what it holds already; a
		// second page is too much for 21 names.
		t.Logf("List went on for %d calls after cancel", calls)
	}
}

func testLarge(t *testing.T, st storage.Storage) {
	const size = 32 << 20
	data := Data(7, size)
	put(t, st, "big", data)
	in, err := st.Stat(context.Background(), "big")
	if err != nil || in.Size != size {
		t.Fatalf("Stat(big) = %+v, %v; want size %d", in, err, size)
	}
	if got := get(t, st, "big"); !bytes.Equal(got, data) {
		t.Fatalf("Get(big): %d bytes, not the %d put", len(got), size)
	}
	p := make([]byte, 5<<20)
	for _, off := range []int64{0, 16<<20 - 3, size - int64(len(p))} {
		n, err := st.ReadAt(context.Background(), "big", p, off)
		if err != nil || n != len(p) || !bytes.Equal(p, data[off:off+int64(n)]) {
			t.Errorf("ReadAt(big, %d bytes @%d) = %d, %v", len(p), off, n, err)
		}
	}
	if _, err := st.Get(context.Background(), "big", size-1); !errors.Is(err, disk.ErrOutOfMemory) {
		t.Errorf("Get(big, max size-1): error %v, want disk.ErrOutOfMemory", err)
	}
}
