package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/vdisk-project/vdisk/backup"
)

// cmdRepoKey manages the passwords of an encrypted repository: each key
// object wraps the one master key with one password.
func cmdRepoKey(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const subs = "list, add, remove, passwd"
	if len(args) == 0 {
		return usagef("repo key takes a subcommand: %s", subs)
	}
	sub, args := args[0], args[1:]
	if sub == "-h" || sub == "--help" {
		return &helpError{}
	}
	if sub != "list" && sub != "add" && sub != "remove" && sub != "passwd" {
		return usagef("unknown repo key subcommand %q (%s)", sub, subs)
	}
	fs := flag.NewFlagSet("repo key "+sub, flag.ContinueOnError)
	var rf repoFlags
	rf.register(fs)
	var output, newPWFile *string
	switch sub {
	case "list":
		output = fs.String("output", "human", "output format: human or json")
	case "add", "passwd":
		newPWFile = fs.String("new-password-file", "", "file holding the new password (else $VDISK_REPO_NEW_PASSWORD, else a prompt)")
	}
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if sub == "remove" {
		if len(pos) != 1 {
			return usagef("repo key remove takes one key ID (or a unique prefix of one)")
		}
	} else if len(pos) > 0 {
		return usagef("repo key %s takes no arguments", sub)
	}
	repo, err := rf.open(ctx, stderr)
	if err != nil {
		return err
	}
	defer repo.Close()
	if !repo.Encrypted() && sub != "list" {
		return usagef("the repository is not encrypted: it has no passwords to %s", map[string]string{"add": "add to", "remove": "remove", "passwd": "change"}[sub])
	}
	switch sub {
	case "list":
		keys, err := repo.Keys(ctx)
		if err != nil {
			return err
		}
		if keys == nil {
			keys = []backup.KeyInfo{}
		}
		if *output == "json" {
			return writeJSON(stdout, keys)
		}
		if !repo.Encrypted() {
			fmt.Fprintln(stdout, "the repository is not encrypted: it has no keys")
			return nil
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, " \tID\tCREATED\tHOST")
		for _, k := range keys {
			mark, created := " ", k.Created.Local().Format("2006-01-02 15:04:05")
			if k.Current {
				mark = "*"
			}
			if k.Damaged {
				created = "(damaged: opens nothing)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", mark, k.ID, created, dash(k.Hostname))
		}
		return tw.Flush()
	case "remove":
		k, err := repo.RemoveKey(ctx, pos[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "removed key %s\n", k.ID)
		return nil
	}
	pw, err := newPassword(*newPWFile, stderr)
	if err != nil {
		return err
	}
	var k backup.KeyInfo
	if sub == "add" {
		k, err = repo.AddKey(ctx, pw)
	} else {
		k, err = repo.ChangePassword(ctx, pw)
	}
	if err != nil {
		return err
	}
	if sub == "add" {
		fmt.Fprintf(stdout, "added key %s\n", k.ID)
	} else {
		fmt.Fprintf(stdout, "changed the password: key %s replaces the one it opened\n", k.ID)
	}
	return nil
}

// newPassword reads a new repository password: from file, from
// $VDISK_REPO_NEW_PASSWORD, or typed twice at a terminal.
func newPassword(file string, stderr io.Writer) ([]byte, error) {
	interactive := file == "" && os.Getenv("VDISK_REPO_NEW_PASSWORD") == ""
	pw, err := readPassword(file, "VDISK_REPO_NEW_PASSWORD", "new repository password: ", stderr)
	if err != nil {
		return nil, err
	}
	if pw == "" {
		return nil, usagef("the new password is empty")
	}
	if interactive {
		again, err := readPassword("", "VDISK_REPO_NEW_PASSWORD", "new repository password again: ", stderr)
		if err != nil {
			return nil, err
		}
		if again != pw {
			return nil, usagef("the two new passwords differ")
		}
	}
	return []byte(pw), nil
}
