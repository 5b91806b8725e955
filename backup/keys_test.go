package backup

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/vdisk-project/vdisk/backup/storage"
	"github.com/vdisk-project/vdisk/backup/storage/mem"
	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/disk/disktest"
)

// opens reports whether password opens the repository in st.
func opens(t *testing.T, st storage.Storage, password string) bool {
	t.Helper()
	r, err := Open(context.Background(), st, []byte(password))
	if errors.Is(err, disk.ErrPermission) {
		return false
	}
	if err != nil {
		t.Fatalf("open with %q: %v", password, err)
	}
	r.Close()
	return true
}

func TestKeyLifecycle(t *testing.T) {
	ctx := context.Background()
	st := mem.New()
	ra := newTestRepo(t, st, true) // password testPassword
	a := string(testPassword)
	src := disktest.NewMemDisk(3 * testChunk)
	_, _ = src.WriteAt([]byte("written under the first password"), testChunk+7)
	p, _, err := ra.Backup(ctx, BackupOptions{Source: "s", Disks: []SourceDisk{{Name: "d", Disk: src}}})
	if err != nil {
		t.Fatal(err)
	}
	kb, err := ra.AddKey(ctx, []byte("bravo"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := ra.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].Current == keys[1].Current {
		t.Fatalf("keys after adding one: %+v, want two with one current", keys)
	}
	var ka KeyInfo
	for _, k := range keys {
		if k.Current {
			ka = k
		} else if k.ID != kb.ID {
			t.Fatalf("the added key %s is not listed: %+v", kb.ID, keys)
		}
	}
	if !opens(t, st, a) || !opens(t, st, "bravo") {
		t.Fatal("both passwords should open the repository")
	}

	// The key in use cannot be removed: the repository keeps one its user
	// has just proven to hold.
	if _, err := ra.RemoveKey(ctx, ka.ID); !errors.Is(err, disk.ErrInvalid) {
		t.Fatalf("removing the current key: %v, want ErrInvalid", err)
	}
	if _, err := ra.RemoveKey(ctx, "zz"); !errors.Is(err, disk.ErrNotFound) {
		t.Fatalf("removing a missing key: %v, want ErrNotFound", err)
	}
	if _, err := ra.RemoveKey(ctx, ""); !errors.Is(err, disk.ErrInvalid) {
		t.Fatalf("removing key \"\": %v, want ErrInvalid", err)
	}

	// Opened with bravo, alpha's key goes, by a unique prefix of its ID.
	rb, err := Open(ctx, st, []byte("bravo"))
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()
	prefix := ka.ID[:8]
	if kb.ID[:8] == prefix {
		prefix = ka.ID
	}
	if k, err := rb.RemoveKey(ctx, prefix); err != nil || k.ID != ka.ID {
		t.Fatalf("remove %s: %+v, %v", prefix, k, err)
	}
	if opens(t, st, a) {
		t.Fatal("a removed key's password still opens the repository")
	}

	// Changing bravo's password leaves exactly one key, charlie's.
	kc, err := rb.ChangePassword(ctx, []byte("charlie"))
	if err != nil {
		t.Fatal(err)
	}
	if opens(t, st, "bravo") || !opens(t, st, "charlie") {
		t.Fatal("after a password change the old password must fail and the new one open")
	}
	keys, _ = rb.Keys(ctx)
	if len(keys) != 1 || keys[0].ID != kc.ID || !keys[0].Current {
		t.Fatalf("keys after the change: %+v, want only %s, current", keys, kc.ID)
	}
	// The repository still reads what it wrote under the first password.
	rc, err := Open(ctx, st, []byte("charlie"))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	dst := disktest.NewMemDisk(3 * testChunk)
	if _, err := rc.Restore(ctx, p, "d", dst, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, dst), readAll(t, src)) {
		t.Fatal("the point restored under the new password differs from its source")
	}
	if _, err := rb.ChangePassword(ctx, nil); !errors.Is(err, disk.ErrInvalid) {
		t.Fatalf("empty new password: %v, want ErrInvalid", err)
	}
}

// deleteFailing fails every Delete, as a crash between the new key's write
// and the old key's removal would leave things.
type deleteFailing struct{ storage.Storage }

func (deleteFailing) Delete(context.Context, string) error { return errInjected }

func TestChangePasswordInterrupted(t *testing.T) {
	ctx := context.Background()
	st := mem.New()
	newTestRepo(t, st, true)
	r, err := Open(ctx, deleteFailing{st}, testPassword)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.ChangePassword(ctx, []byte("new")); err == nil {
		t.Fatal("change password with a failing delete reported success")
	}
	if !opens(t, st, string(testPassword)) || !opens(t, st, "new") {
		t.Fatal("an interrupted change must leave both passwords working")
	}

	// A new key whose write fails leaves the old key alone.
	fs := &faultStorage{Storage: st, failAfter: 0}
	r2, err := Open(ctx, fs, []byte("new"))
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if _, err := r2.ChangePassword(ctx, []byte("newer")); err == nil {
		t.Fatal("change password with a failing put reported success")
	}
	fs.torn = true
	if _, err := r2.ChangePassword(ctx, []byte("newer")); err == nil {
		t.Fatal("change password with a torn put reported success")
	}
	if !opens(t, st, "new") || opens(t, st, "newer") {
		t.Fatal("a failed change must leave the old password working and the new one not")
	}

	// A store that acknowledges a put but keeps damaged bytes: the new key
	// is read back before the old one goes, so the old password survives.
	r3, err := Open(ctx, flipping{st}, []byte("new"))
	if err != nil {
		t.Fatal(err)
	}
	defer r3.Close()
	if _, err := r3.ChangePassword(ctx, []byte("newest")); !errors.Is(err, disk.ErrCorrupt) {
		t.Fatalf("change password on a store that damages puts: %v, want ErrCorrupt", err)
	}
	if !opens(t, st, "new") {
		t.Fatal("a change whose new key was damaged removed the old key")
	}
}

// flipping stores every object with one byte in its middle changed and
// reports success.
type flipping struct{ storage.Storage }

func (f flipping) Put(ctx context.Context, name string, data []byte) error {
	d := append([]byte(nil), data...)
	d[len(d)/2] ^= 0x01
	return f.Storage.Put(ctx, name, d)
}

func TestKeyLimitsAndUnencrypted(t *testing.T) {
	ctx := context.Background()
	st := mem.New()
	r := newTestRepo(t, st, true)
	for i := 1; i < maxKeys; i++ {
		if _, err := r.AddKey(ctx, []byte{'k', byte(i)}); err != nil {
			t.Fatalf("key %d: %v", i+1, err)
		}
	}
	if _, err := r.AddKey(ctx, []byte("one too many")); !errors.Is(err, disk.ErrNoSpace) {
		t.Fatalf("key %d: %v, want ErrNoSpace", maxKeys+1, err)
	}
	if !opens(t, st, string([]byte{'k', maxKeys - 1})) {
		t.Fatal("the last key added does not open the repository")
	}
	// One object more than Open accepts: the listing says so too.
	if err := st.Put(ctx, keysPrefix+"00000000000000000000000000000000", []byte("{")); err != nil {
		t.Fatal(err)
	}
	if keys, err := r.Keys(ctx); !errors.Is(err, disk.ErrCorrupt) {
		t.Fatalf("%d key objects listed (err %v); Open accepts at most %d", len(keys), err, maxKeys)
	}

	u := newTestRepo(t, mem.New(), false)
	for name, err := range map[string]error{
		"add":    func() error { _, err := u.AddKey(ctx, []byte("x")); return err }(),
		"remove": func() error { _, err := u.RemoveKey(ctx, "x"); return err }(),
		"change": func() error { _, err := u.ChangePassword(ctx, []byte("x")); return err }(),
	} {
		if !errors.Is(err, disk.ErrNotSupported) {
			t.Errorf("%s on an unencrypted repository: %v, want ErrNotSupported", name, err)
		}
	}
	if keys, err := u.Keys(ctx); err != nil || len(keys) != 0 {
		t.Errorf("keys of an unencrypted repository: %v, %v", keys, err)
	}
}

func TestDamagedKeyListed(t *testing.T) {
	ctx := context.Background()
	st := mem.New()
	r := newTestRepo(t, st, true)
	if err := st.Put(ctx, keysPrefix+"0123456789abcdef0123456789abcdef", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	keys, err := r.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var damaged int
	for _, k := range keys {
		if k.Damaged {
			damaged++
		}
	}
	if damaged != 1 || len(keys) != 2 {
		t.Fatalf("keys: %+v, want one damaged of two", keys)
	}
	if _, err := r.RemoveKey(ctx, "0123"); err != nil {
		t.Fatal(err)
	}
	if keys, _ := r.Keys(ctx); len(keys) != 1 {
		t.Fatalf("after removing the damaged key: %+v", keys)
	}
}

func TestChangePasswordConcurrent(t *testing.T) {
	ctx := context.Background()
	st := mem.New()
	r := newTestRepo(t, st, true)
	var wg sync.WaitGroup
	pws := []string{"p1", "p2", "p3", "p4"}
	for _, pw := range pws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.ChangePassword(ctx, []byte(pw)); err != nil {
				t.Error(err)
			}
			_, _ = r.Keys(ctx)
		}()
	}
	wg.Wait()
	keys, err := r.Keys(ctx)
	if err != nil || len(keys) != 1 || !keys[0].Current {
		t.Fatalf("after concurrent changes: %+v, %v; want exactly the current key", keys, err)
	}
	n := 0
	for _, pw := range append(pws, string(testPassword)) {
		if opens(t, st, pw) {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d passwords open the repository after concurrent changes, want 1", n)
	}
}
