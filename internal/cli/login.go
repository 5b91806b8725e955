package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/hostclient"
)

// cmdLogin logs in to a host and saves the login (server, thumbprint,
// token) for the other host commands, as docker and kubectl keep theirs.
func cmdLogin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("login", flag.ContinueOnError)
	server := fs.String("server", "127.0.0.1:8443", "host control API address, host:port or [v6addr]:port")
	tp := fs.String("thumbprint", "", "SHA-256 thumbprint of the host certificate, as 'vdisk serve' prints it")
	user := fs.String("user", "admin", "user name")
	pwFile := fs.String("password-file", "", "file holding the password (else $VDISK_PASSWORD, else a prompt)")
	output := fs.String("output", "human", "output format: human or json")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("login takes no arguments")
	}
	if *tp == "" {
		if l, err := readLogin(); err == nil && l.Server == hostclient.NormalizeServer(*server) {
			*tp = l.Thumbprint
		}
	}
	if *tp == "" {
		return usagef("--thumbprint is needed the first time: the host's certificate is always verified")
	}
	pw, err := readPassword(*pwFile, "VDISK_PASSWORD", "password for "+*user+": ", stderr)
	if err != nil {
		return err
	}
	c, err := hostclient.New(hostclient.Options{Server: *server, Thumbprint: *tp, Timeout: time.Minute})
	if err != nil {
		return err
	}
	defer c.Close()
	sess, err := c.Login(ctx, *user, pw)
	if err != nil {
		return err
	}
	p, err := writeLogin(savedLogin{Server: c.Server(), Thumbprint: *tp, User: *user, Token: c.Token()})
	if err != nil {
		return err
	}
	if *output == "json" {
		return writeJSON(stdout, map[string]any{"server": c.Server(), "session": sess, "saved": p})
	}
	fmt.Fprintf(stdout, "logged in to %s as %s (role %s); session expires %s; saved in %s\n", c.Server(), sess.User, sess.Role, ts(sess.Expires), p)
	return nil
}

// cmdLogout ends the saved session and forgets its token.
func cmdLogout(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("logout", flag.ContinueOnError)
	c, _, _, err := hostCommand(ctx, fs, args, 0, "vdisk logout")
	if err != nil {
		return err
	}
	defer c.Close()
	err = c.Logout(ctx)
	l, _ := readLogin()
	l.Token = ""
	if _, werr := writeLogin(l); err == nil {
		err = werr
	}
	if err == nil {
		fmt.Fprintln(stdout, "logged out")
	} else if disk.CodeOf(err) == disk.ErrPermission {
		err = nil // the session had ended already
	}
	return err
}
