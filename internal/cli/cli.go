// Package cli implements the vdisk command line: one file per command, each
// with a runX(ctx, opts, args, stdout, stderr) function that tests call
// directly. Only this package reads flags, environment and config files.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/vdisk-project/vdisk/disk"
)

// Version is the vdisk version, set at build time with -ldflags.
var Version = "0.1.0-dev"

// command is one vdisk subcommand.
type command struct {
	name    string
	usage   string // one line: arguments
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"info", "[--output=json] [-f FMT] [--backing-chain] IMG", "show an image's format, size, allocation and format details", cmdInfo},
		{"create", "-f FMT [-o OPTIONS] [-b BACKING [-F vmdk]] IMG [SIZE]", "create a new image", cmdCreate},
		{"convert", "[-p] [-c] [-n] [-U] [-S SIZE] [-f FMT] -O FMT [-o OPTIONS] SRC DST", "copy an image into a new one of any format (thin stays thin); an existing target is replaced", cmdConvert},
		{"measure", "[--output=json] [-O FMT] [-o OPTIONS] (--size SIZE | [-f FMT] SRC)", "bytes a conversion needs: required and fully allocated, like qemu-img measure", cmdMeasure},
		{"dd", "[-f FMT] [-O FMT] [bs=SIZE] [count=N] [skip=N] if=INPUT of=OUTPUT", "copy part of an image into a new one, like qemu-img dd", cmdDD},
		{"rebase", "[-u] [-p] -b BACKING [-F vmdk] IMG", "give a VMDK child another parent (safe: its contents stay the same; -u: only the name and CID change)", cmdRebase},
		{"commit", "[-d] [-p] [-b BASE] IMG", "write a VMDK child's data into its parent (or BASE); the child is emptied unless -d", cmdCommit},
		{"check", "[-r leaks|all] [--output=json] IMG", "check an image for corruption and optionally repair it", cmdCheck},
		{"map", "[--output=json] [--chunk-size SIZE] IMG", "show which ranges hold data (allocation map)", cmdMap},
		{"compare", "[-s] [-p] [-f FMT] [-F FMT] A B", "compare the contents of two images", cmdCompare},
		{"resize", "[--shrink] IMG [+|-]SIZE", "grow an image, or shrink it with --shrink", cmdResize},
		{"compact", "IMG", "shrink a sparse image: drop zero and unreferenced grains", cmdCompact},
		{"meta", "[--output=json] IMG [KEY [VALUE]]", "list, read or write an image's metadata (disk database) keys", cmdMeta},
		{"export", "[--read-only] [--bind ADDR:PORT | --socket PATH] [--tls-cert FILE --tls-key FILE] [--shared N] [--name NAME] IMG", "serve an image over NBD until interrupted", cmdExport},
		{"repo", "init|rebuild-index|key list|add|remove|passwd [--repo REPO] …", "create a backup repository (a directory or s3://BUCKET/PREFIX), rebuild its index from the packs, or manage its passwords", cmdRepo},
		{"backup", "--repo REPO [--tag T] [--bitmap NAME] [--full] [--progress auto|json|none] SOURCE…", "back up images, NBD exports, host disks (vdisk:disk/NAME) or VMs (vdisk:vm/NAME): incremental forever, deduplicated, compressed, encrypted", cmdBackup},
		{"points", "--repo REPO [--source S] [--tag T] [--output=json]", "list the backup points of a repository", cmdPoints},
		{"restore", "--repo REPO [-O FMT] [-o OPTIONS] POINT[/DISK] TARGET", "restore a point's disk into a new image (thin), an existing image or host disk (only what differs), or every disk into a directory", cmdRestore},
		{"verify", "--repo REPO [--read-data] [--subset n/m|P%]", "check that every point's chunks exist and, with --read-data, decrypt and hash correctly", cmdVerify},
		{"forget", "--repo REPO [--keep-last N] [--keep-daily N] … [--keep-tag T] [--prune [--grace DUR]] [--dry-run]", "forget points by a retention policy per source, and prune the chunks no point needs", cmdForget},
		{"volumes", "[--output=json] IMG… ", "list the volumes inside disks: partitions, LVM, filesystems, guest mount points and OS (VixMntapi)", cmdVolumes},
		{"ls", "[--volume V] [-R] [-d] [--output=json] IMG [PATH]", "list files inside a disk's filesystem, like ls -l (several disks: IMG… -- PATH)", cmdLs},
		{"cat", "[--volume V] IMG PATH…", "print files from inside a disk", cmdCat},
		{"extract", "[--volume V] [--overwrite] [-p] IMG PATH… DEST", "copy files and trees out of a disk with modes, owners, times, links and holes (several disks: IMG… -- PATH… DEST)", cmdExtract},
		{"mount", "[--volume V] [--allow-other] IMG DIR", "mount every volume of the disks read-only with FUSE, one directory per volume, until Ctrl-C (several disks: IMG… -- DIR)", cmdMount},
		{"umount", "DIR", "unmount a 'vdisk mount'", cmdUmount},
		{"serve", "[--config FILE] [--data-dir DIR] [--listen ADDR] [--nbd-listen ADDR] [flags]", "run the vdisk host: a datastore served over HTTPS and NBD/TLS", cmdServe},
		{"login", "[--server HOST:PORT] [--thumbprint TP] [--user U] [--password-file F]", "log in to a vdisk host and save the login", cmdLogin},
		{"logout", "", "end the saved host session", cmdLogout},
		{"vm", "list|create|show|delete|add-disk|attach|detach|relocate …", "manage the host's VMs", cmdVM},
		{"disk", "list|create|show|delete|grow|cbt|relocate|meta …", "manage the host's disks", cmdDisk},
		{"snapshot", "list|create|remove|revert --vm VM | --disk DISK …", "manage snapshots of a VM or a disk", cmdSnapshot},
		{"changes", "--change-id ID|'*' [--snapshot S] DISK", "areas of a host disk changed since a change ID (QueryChangedDiskAreas)", cmdChanges},
		{"allocated", "[--snapshot S] [--chunk-size N] DISK", "allocated blocks of a host disk (QueryAllocatedBlocks)", cmdAllocated},
		{"ticket", "create|list|revoke …", "NBD access tickets for a disk or snapshot", cmdTicket},
		{"access", "prepare|end …", "hold a VM or disk for a backup (PrepareForAccess/EndAccess)", cmdAccess},
		{"cleanup", "[--end-other-sessions]", "remove what crashed clients left on the host", cmdCleanup},
		{"user", "list|add|remove|role|passwd …", "manage the host's users", cmdUser},
		{"session", "list|end …", "list or end login sessions", cmdSession},
		{"demo", "[DIR]", "run the local disk engine end to end on an embedded default", cmdDemo},
		{"version", "", "print the version", cmdVersion},
	}
}

// Exit codes. They are documented in the README and in `vdisk help`.
const (
	ExitOK          = 0
	ExitDiffer      = 1  // compare: contents differ
	ExitCorrupt     = 2  // check: errors found and not repaired
	ExitLeaks       = 3  // check: only leaked space found
	ExitUsage       = 64 // bad command line
	ExitInvalid     = 65 // invalid argument (ErrInvalid)
	ExitNotFound    = 66
	ExitBusy        = 67
	ExitNoMemory    = 68
	ExitPermission  = 69
	ExitAccess      = 70 // I/O, network or TLS error
	ExitUnsupported = 71
	ExitCorruptImg  = 72 // the image is corrupt (ErrCorrupt)
	ExitNoSpace     = 73
	ExitInterrupted = 130
)

var exitCodes = []struct {
	code int
	what string
}{
	{ExitOK, "success"},
	{ExitDiffer, "compare: the images differ"},
	{ExitCorrupt, "check: corruption found (and not repaired)"},
	{ExitLeaks, "check: leaked space found, no corruption"},
	{ExitUsage, "usage error"},
	{ExitInvalid, "invalid argument"},
	{ExitNotFound, "not found"},
	{ExitBusy, "busy or locked; retrying may work"},
	{ExitNoMemory, "out of memory or over a memory budget"},
	{ExitPermission, "permission denied (or read-only)"},
	{ExitAccess, "I/O, network or TLS error"},
	{ExitUnsupported, "not supported"},
	{ExitCorruptImg, "the image is corrupt"},
	{ExitNoSpace, "no space left on the target"},
	{ExitInterrupted, "interrupted"},
}

// exitError carries an exit code other than the one the error's disk code
// maps to (compare's "differ", check's findings).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// helpError carries a command's flag list, asked for with -h.
type helpError struct{ text string }

func (e *helpError) Error() string { return e.text }

// usageError is a bad command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// ExitCode maps an error to the process exit code, from one table.
func ExitCode(err error) int {
	var ee *exitError
	var ue *usageError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ue), errors.Is(err, flag.ErrHelp):
		return ExitUsage
	case errors.Is(err, context.Canceled):
		return ExitInterrupted
	}
	switch disk.CodeOf(err) {
	case disk.ErrInvalid:
		return ExitInvalid
	case disk.ErrNotFound:
		return ExitNotFound
	case disk.ErrBusy:
		return ExitBusy
	case disk.ErrOutOfMemory:
		return ExitNoMemory
	case disk.ErrPermission:
		return ExitPermission
	case disk.ErrNotSupported:
		return ExitUnsupported
	case disk.ErrCorrupt:
		return ExitCorruptImg
	case disk.ErrNoSpace:
		return ExitNoSpace
	}
	return ExitAccess
}

// Main runs the command line args (without the program name) and returns
// the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printHelp(stderr)
		return ExitUsage
	}
	name := args[0]
	if name == "help" || name == "-h" || name == "--help" {
		if len(args) > 1 {
			if _, ok := lookup(args[1]); ok {
				return Main(ctx, []string{args[1], "-h"}, stdout, stderr)
			}
		}
		printHelp(stdout)
		return ExitOK
	}
	c, ok := lookup(name)
	if !ok {
		fmt.Fprintf(stderr, "vdisk: unknown command %q; see 'vdisk help'\n", name)
		return ExitUsage
	}
	err := checkOutputArgs(args[1:])
	if err == nil {
		stopProfile := startProfile(stderr)
		err = c.run(ctx, args[1:], stdout, stderr)
		stopProfile()
	}
	var he *helpError
	if errors.As(err, &he) {
		fmt.Fprintf(stdout, "usage: %s\n\n%s\n", strings.TrimSpace("vdisk "+c.name+" "+c.usage), c.summary)
		if he.text != "" {
			fmt.Fprintf(stdout, "\nflags:\n%s", he.text)
		}
		return ExitOK
	}
	code := ExitCode(err)
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		var ee *exitError
		if !errors.As(err, &ee) || ee.msg != "" {
			msg := err.Error()
			if code == ExitInterrupted {
				msg = "interrupted" // not "context canceled"
			}
			if jsonErrors(args) {
				json.NewEncoder(stdout).Encode(map[string]any{"error": msg, "code": disk.CodeOf(err).String(), "exit": code})
			} else {
				fmt.Fprintf(stderr, "vdisk %s: %s\n", name, msg)
			}
		}
		if _, ok := err.(*usageError); ok {
			fmt.Fprintf(stderr, "usage: vdisk %s %s\n", c.name, c.usage)
		}
	}
	return code
}

// jsonErrors reports whether the command line asks for JSON output, so
// that an error is reported as JSON too.
func jsonErrors(args []string) bool {
	v, _ := outputArg(args)
	return v == "json"
}

// outputArg returns the value of the last --output flag of a command line
// (--output=X, --output X, -output=X or -output X), and whether there is
// one. Arguments after "--" are not flags.
func outputArg(args []string) (string, bool) {
	var v string
	found := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		name, val, hasVal := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "output" {
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				break // the flag parser reports the missing value
			}
			i++
			val = args[i]
		}
		v, found = val, true
	}
	return v, found
}

// checkOutput accepts the values of --output: human and json, as
// qemu-img does. Anything else is a usage error.
func checkOutput(v string) error {
	if v != "human" && v != "json" {
		return usagef("--output must be human or json, not %q", v)
	}
	return nil
}

// checkOutputArgs applies checkOutput to every command's --output flag
// before the command runs.
func checkOutputArgs(args []string) error {
	if v, ok := outputArg(args); ok {
		return checkOutput(v)
	}
	return nil
}

func lookup(name string) (command, bool) {
	for _, c := range commands() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

func printHelp(w io.Writer) {
	fmt.Fprintf(w, "vdisk %s: read, write, convert, check and serve virtual disks\n\nusage: vdisk COMMAND [ARGS]\n\ncommands:\n", Version)
	width := 0
	for _, c := range commands() {
		width = max(width, len(c.name))
	}
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-*s  %s\n", width, c.name, c.summary)
	}
	fmt.Fprintf(w, "\n'vdisk help COMMAND' shows a command's arguments. Sizes take K, M, G, T suffixes (powers of 1024).\n\nexit codes:\n")
	for _, e := range exitCodes {
		fmt.Fprintf(w, "  %3d  %s\n", e.code, e.what)
	}
}

// parse parses flags that may appear before, between or after positional
// arguments, as qemu-img allows, and returns the positional arguments.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				var b strings.Builder
				fs.SetOutput(&b)
				fs.PrintDefaults()
				return nil, &helpError{b.String()}
			}
			return nil, usagef("%v", err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// parseSize parses a size such as 4096, 10G, 1.5T or 512K (powers of 1024;
// a trailing B or iB is allowed).
func parseSize(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSpace(s), "B"), "i")
	mult := int64(1)
	if t != "" {
		switch strings.ToUpper(t[len(t)-1:]) {
		case "K":
			mult = 1 << 10
		case "M":
			mult = 1 << 20
		case "G":
			mult = 1 << 30
		case "T":
			mult = 1 << 40
		case "P":
			mult = 1 << 50
		case "E":
			mult = 1 << 60
		}
		if mult != 1 {
			t = t[:len(t)-1]
		}
	}
	if f, err := strconv.ParseFloat(t, 64); err == nil && f >= 0 && f*float64(mult) < 1<<63 {
		return int64(f * float64(mult)), nil
	}
	return 0, disk.Errorf(disk.ErrInvalid, "invalid size %q", s)
}

// humanSize formats bytes like qemu-img: "4 GiB", "1.5 MiB", "512 B".
func humanSize(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	f := float64(n)
	i := 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d B", n)
	}
	s := strconv.FormatFloat(f, 'f', 3, 64)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s + " " + units[i]
}

// parseOptions parses qemu-img's -o "key=value,key2=value2" (",," escapes a
// comma).
func parseOptions(s string) (map[string]string, error) {
	out := map[string]string{}
	if s == "" {
		return out, nil
	}
	s = strings.ReplaceAll(s, ",,", "\x00")
	for _, kv := range strings.Split(s, ",") {
		kv = strings.ReplaceAll(kv, "\x00", ",")
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			v = "on"
		}
		out[strings.TrimSpace(k)] = v
	}
	return out, nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "    ")
	return enc.Encode(v)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// isTerminal reports whether w is a terminal (for progress bars).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && termIsTerminal(int(f.Fd()))
}

// count writes n with the singular or plural of a noun: "1 area", "2 areas".
func count[N int | int64](n N, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
