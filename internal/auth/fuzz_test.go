package auth

import (
	"errors"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
)

func FuzzLoadUsers(f *testing.F) {
	f.Add([]byte(`{"version":1,"users":[]}`))
	f.Add([]byte(`{"version":1,"users":[{"name":"root","role":"admin","hash":"pbkdf2-sha256$1000$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, data []byte) {
		users, err := parseUsers(data)
		if err != nil {
			if !errors.Is(err, disk.ErrCorrupt) {
				t.Fatalf("error %v is not corrupt", err)
			}
			return
		}
		for name, u := range users {
			if name != u.Name || !u.Role.Valid() || checkName(name) != nil {
				t.Fatalf("accepted bad user %+v", u)
			}
		}
	})
}

func FuzzRedeem(f *testing.F) {
	m, _, _ := setup(f, nil)
	_, s := login(f, m, "restore")
	tk, _, err := m.Issue(s, "disk/a", ReadWrite, 0, &TicketOptions{MaxConns: 64})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tk, "disk/a")
	f.Add(tk, "disk/b")
	f.Add("", "")
	f.Add(tk[:42], "")
	f.Fuzz(func(t *testing.T, ticket, target string) {
		g, rel, err := m.Redeem(ticket, target)
		if err != nil {
			if c := disk.CodeOf(err); c != disk.ErrPermission && c != disk.ErrBusy {
				t.Fatalf("error %v has code %v", err, c)
			}
			return
		}
		defer rel()
		if ticket != tk || (target != "" && target != g.Target) {
			t.Fatalf("redeemed %q for %q: %+v", ticket, target, g)
		}
	})
}
