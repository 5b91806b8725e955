package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/vdisk-project/vdisk/internal/auth"
	"github.com/vdisk-project/vdisk/internal/datastore"
	"github.com/vdisk-project/vdisk/internal/hostclient"
)

// cmdTicket issues, lists and revokes NBD access tickets.
func cmdTicket(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	verb, args, err := subcommand("ticket", args, "create", "list", "revoke")
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("ticket "+verb, flag.ContinueOnError)
	switch verb {
	case "create":
		dsk := fs.String("disk", "", "the disk")
		vm := fs.String("vm", "", "the VM (with --key)")
		key := fs.String("key", "", "the VM's controller key, such as scsi0:0")
		snap := fs.String("snapshot", "", "a snapshot of the disk (read-only)")
		mode := fs.String("mode", "ro", "ro or rw")
		ttl := fs.Duration("ttl", 5*time.Minute, "validity")
		conns := fs.Int("max-conns", 4, "connections that may hold it at once")
		c, h, _, err := hostCommand(ctx, fs, args, 0, "vdisk ticket create --disk D | --vm V --key K [--snapshot S] [--mode ro|rw] [--ttl 5m]")
		if err != nil {
			return err
		}
		t, err := c.IssueTicket(ctx, hostclient.TicketRequest{Disk: *dsk, VM: *vm, Key: *key, Snapshot: *snap, Mode: *mode,
			TTL: int64(ttl.Seconds()), MaxConns: *conns})
		if err != nil {
			return err
		}
		return h.emit(stdout, t, func(w io.Writer) {
			fmt.Fprintf(w, "uri\t%s\n", t.URI)
			if t.PlainURI != "" {
				fmt.Fprintf(w, "plain\t%s\n", t.PlainURI)
			}
			fmt.Fprintf(w, "target\t%s (%s, %s)\n", t.Target, t.Mode, humanSize(t.Size))
			fmt.Fprintf(w, "expires\t%s\n", ts(t.Expires))
			fmt.Fprintf(w, "thumbprint\t%s\n", t.Thumbprint)
			fmt.Fprintf(w, "\t(vdisk reads it with VDISK_NBD_THUMBPRINT=<thumbprint>; qemu and libnbd with ?tls-certificates=DIR holding the host certificate as ca-cert.pem)\n")
		})
	case "list":
		c, h, _, err := hostCommand(ctx, fs, args, 0, "vdisk ticket list")
		if err != nil {
			return err
		}
		var gs []auth.Grant
		if err := c.Do(ctx, "GET", "/api/v1/tickets", nil, &gs); err != nil {
			return err
		}
		return h.emit(stdout, nonNil(gs), func(w io.Writer) {
			fmt.Fprintln(w, "ID\tTARGET\tMODE\tEXPIRES")
			for _, g := range gs {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", g.ID, g.Target, g.Mode, ts(g.Expires))
			}
		})
	case "revoke":
		c, _, pos, err := hostCommand(ctx, fs, args, 1, "vdisk ticket revoke ID")
		if err != nil {
			return err
		}
		return c.Do(ctx, "DELETE", "/api/v1/tickets/"+hostclient.Esc(pos[0]), nil, nil)
	}
	return nil
}

// cmdAccess is PrepareForAccess / EndAccess.
func cmdAccess(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	verb, args, err := subcommand("access", args, "prepare", "end")
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("access "+verb, flag.ContinueOnError)
	switch verb {
	case "prepare":
		vm := fs.String("vm", "", "the VM")
		dsk := fs.String("disk", "", "the disk")
		reason := fs.String("reason", "", "who and why, shown to operators")
		c, h, _, err := hostCommand(ctx, fs, args, 0, "vdisk access prepare --vm VM | --disk DISK [--reason R]")
		if err != nil {
			return err
		}
		if (*vm == "") == (*dsk == "") {
			return usagef("give --vm or --disk")
		}
		p := "/api/v1/vms/" + hostclient.Esc(*vm) + "/access"
		if *dsk != "" {
			p = "/api/v1/disks/" + hostclient.Esc(*dsk) + "/access"
		}
		var l datastore.Lease
		if err := c.Do(ctx, "POST", p, map[string]string{"reason": *reason}, &l); err != nil {
			return err
		}
		return h.emit(stdout, l, func(w io.Writer) { fmt.Fprintln(w, l.ID) })
	case "end":
		c, _, pos, err := hostCommand(ctx, fs, args, 1, "vdisk access end LEASE")
		if err != nil {
			return err
		}
		return c.Do(ctx, "DELETE", "/api/v1/access/"+hostclient.Esc(pos[0]), nil, nil)
	}
	return nil
}

// cmdCleanup removes what crashed clients left behind (VixDiskLib_Cleanup).
func cmdCleanup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cleanup", flag.ContinueOnError)
	other := fs.Bool("end-other-sessions", false, "first end this user's other sessions (after a crash of this user's client)")
	c, h, _, err := hostCommand(ctx, fs, args, 0, "vdisk cleanup [--end-other-sessions]")
	if err != nil {
		return err
	}
	p := "/api/v1/cleanup"
	if *other {
		p += "?endOtherSessions=true"
	}
	var rep datastore.CleanupReport
	if err := c.Do(ctx, "POST", p, nil, &rep); err != nil {
		return err
	}
	return h.emit(stdout, rep, func(w io.Writer) {
		fmt.Fprintf(w, "removed %s, %s, %s\n", count(len(rep.Snapshots), "temporary snapshot", "temporary snapshots"), count(len(rep.Leases), "lease", "leases"), count(len(rep.Stray), "stray directory", "stray directories"))
	})
}

// cmdUser manages users (admin).
func cmdUser(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	verb, args, err := subcommand("user", args, "list", "add", "remove", "role", "passwd")
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("user "+verb, flag.ContinueOnError)
	pwFile := fs.String("password-file", "", "add, passwd: file holding the password (else $VDISK_NEW_PASSWORD; add generates one)")
	curFile := fs.String("current-password-file", "", "passwd of your own user: file holding your current password (else $VDISK_PASSWORD, else a prompt)")
	switch verb {
	case "list":
		c, h, _, err := hostCommand(ctx, fs, args, 0, "vdisk user list")
		if err != nil {
			return err
		}
		var us []auth.User
		if err := c.Do(ctx, "GET", "/api/v1/users", nil, &us); err != nil {
			return err
		}
		return h.emit(stdout, nonNil(us), func(w io.Writer) {
			fmt.Fprintln(w, "NAME\tROLE")
			for _, u := range us {
				fmt.Fprintf(w, "%s\t%s\n", u.Name, u.Role)
			}
		})
	case "add":
		c, h, pos, err := hostCommand(ctx, fs, args, 2, "vdisk user add NAME read-only|backup|restore|admin")
		if err != nil {
			return err
		}
		pw := ""
		if *pwFile != "" || getenv("VDISK_NEW_PASSWORD") != "" {
			if pw, err = readPassword(*pwFile, "VDISK_NEW_PASSWORD", "", stderr); err != nil {
				return err
			}
		}
		var out map[string]string
		if err := c.Do(ctx, "POST", "/api/v1/users", map[string]string{"name": pos[0], "role": pos[1], "password": pw}, &out); err != nil {
			return err
		}
		return h.emit(stdout, out, func(w io.Writer) {
			if out["password"] != "" {
				fmt.Fprintf(w, "user %s (%s) added; password %s (shown only now)\n", pos[0], pos[1], out["password"])
			} else {
				fmt.Fprintf(w, "user %s (%s) added\n", pos[0], pos[1])
			}
		})
	case "remove":
		c, _, pos, err := hostCommand(ctx, fs, args, 1, "vdisk user remove NAME")
		if err != nil {
			return err
		}
		return c.Do(ctx, "DELETE", "/api/v1/users/"+hostclient.Esc(pos[0]), nil, nil)
	case "role":
		c, _, pos, err := hostCommand(ctx, fs, args, 2, "vdisk user role NAME ROLE")
		if err != nil {
			return err
		}
		return c.Do(ctx, "PUT", "/api/v1/users/"+hostclient.Esc(pos[0]), map[string]string{"role": pos[1]}, nil)
	case "passwd":
		c, _, pos, err := hostCommand(ctx, fs, args, 1, "vdisk user passwd NAME")
		if err != nil {
			return err
		}
		req := map[string]string{}
		var me struct{ User string }
		if err := c.Do(ctx, "GET", "/api/v1/session", nil, &me); err != nil {
			return err
		}
		if me.User == pos[0] {
			// Your own password: the host wants the current one too, so
			// that a stolen session cannot take the account.
			if req["currentPassword"], err = readPassword(*curFile, "VDISK_PASSWORD", "current password: ", stderr); err != nil {
				return err
			}
		}
		if req["password"], err = readPassword(*pwFile, "VDISK_NEW_PASSWORD", "new password for "+pos[0]+": ", stderr); err != nil {
			return err
		}
		return c.Do(ctx, "PUT", "/api/v1/users/"+hostclient.Esc(pos[0]), req, nil)
	}
	return nil
}

// cmdSession lists and ends login sessions.
func cmdSession(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	verb, args, err := subcommand("session", args, "list", "end")
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("session "+verb, flag.ContinueOnError)
	switch verb {
	case "list":
		c, h, _, err := hostCommand(ctx, fs, args, 0, "vdisk session list")
		if err != nil {
			return err
		}
		var ss []auth.Session
		if err := c.Do(ctx, "GET", "/api/v1/sessions", nil, &ss); err != nil {
			return err
		}
		return h.emit(stdout, nonNil(ss), func(w io.Writer) {
			fmt.Fprintln(w, "ID\tUSER\tROLE\tCREATED\tEXPIRES")
			for _, s := range ss {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", s.ID, s.User, s.Role, ts(s.Created), ts(s.Expires))
			}
		})
	case "end":
		c, _, pos, err := hostCommand(ctx, fs, args, 1, "vdisk session end ID")
		if err != nil {
			return err
		}
		return c.Do(ctx, "DELETE", "/api/v1/sessions/"+hostclient.Esc(pos[0]), nil, nil)
	}
	return nil
}
