package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/backup"
)

func TestRepoKeyCLI(t *testing.T) {
	dir := t.TempDir()
	backupRepo(t) // password "test password"
	img := filepath.Join(dir, "d.img")
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 131 >> 7)
	}
	if err := os.WriteFile(img, data, 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "backup", "--progress", "none", img)

	list := func() []backup.KeyInfo {
		t.Helper()
		var keys []backup.KeyInfo
		out := mustRun(t, "repo", "key", "list", "--output=json")
		if err := json.Unmarshal([]byte(out), &keys); err != nil {
			t.Fatalf("key list: %q: %v", out, err)
		}
		return keys
	}
	first := list()
	if len(first) != 1 || !first[0].Current {
		t.Fatalf("a new repository's keys: %+v", first)
	}

	pw := filepath.Join(dir, "second.pw")
	if err := os.WriteFile(pw, []byte("second password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := mustRun(t, "repo", "key", "add", "--new-password-file", pw)
	if !strings.HasPrefix(out, "added key ") {
		t.Fatalf("key add: %q", out)
	}
	if keys := list(); len(keys) != 2 {
		t.Fatalf("after add: %+v", keys)
	}
	human := mustRun(t, "repo", "key", "list")
	if !strings.Contains(human, "*  "+first[0].ID) {
		t.Errorf("human key list does not mark the current key:\n%s", human)
	}

	// The key in use cannot be removed.
	if _, _, code := run(t, "repo", "key", "remove", first[0].ID[:10]); code != ExitInvalid {
		t.Errorf("removing the current key: exit %d", code)
	}
	// With the second password, the first key goes; then the first
	// password no longer opens the repository.
	t.Setenv("VDISK_REPO_PASSWORD", "")
	out = mustRun(t, "repo", "key", "remove", "--password-file", pw, first[0].ID[:10])
	if out != "removed key "+first[0].ID+"\n" {
		t.Errorf("key remove: %q", out)
	}
	t.Setenv("VDISK_REPO_PASSWORD", "test password")
	if _, _, code := run(t, "points"); code != ExitPermission {
		t.Errorf("a removed key's password: exit %d, want %d", code, ExitPermission)
	}

	// passwd replaces the key in use; the point restores with the new one.
	t.Setenv("VDISK_REPO_PASSWORD", "second password")
	t.Setenv("VDISK_REPO_NEW_PASSWORD", "third password")
	mustRun(t, "repo", "key", "passwd")
	if _, _, code := run(t, "points"); code != ExitPermission {
		t.Errorf("the replaced password: exit %d, want %d", code, ExitPermission)
	}
	t.Setenv("VDISK_REPO_PASSWORD", "third password")
	if keys := list(); len(keys) != 1 || !keys[0].Current {
		t.Fatalf("after passwd: %+v", keys)
	}
	mustRun(t, "restore", "latest", filepath.Join(dir, "back.img"))
	mustRun(t, "compare", img, filepath.Join(dir, "back.img"))

	if _, _, code := run(t, "repo", "key", "frob"); code != ExitUsage {
		t.Errorf("unknown key subcommand: exit %d, want %d", code, ExitUsage)
	}
}
