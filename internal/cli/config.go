package cli

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/conffile"
)

// A config file holds one "key = value" per line; '#' starts a comment.
// The keys are the long flag names of the command that reads it, so every
// flag has a documented key and the file needs no separate reference.
// Flags given on the command line win over the file. A value for a
// repeatable flag may list several items separated by commas.
//
//	# /etc/vdisk/serve.conf
//	data-dir   = /srv/vdisk
//	listen     = 0.0.0.0:8443, [::]:8443
//	nbd-listen = 0.0.0.0:10809
//	datastore  = fast=/mnt/nvme/vdisk

// applyConfig sets the flags of fs that the command line left unset from
// the config file at path. Unknown keys are errors (a typo must not be
// ignored silently). Keys naming repeatable flags (listFlag) take
// comma-separated lists.
func applyConfig(fs *flag.FlagSet, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return disk.Wrap(err, "config", path, -1)
	}
	kv, err := conffile.Parse(b, path)
	if err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, p := range kv {
		k, v := p.Key, p.Value
		f := fs.Lookup(k)
		if f == nil || k == "config" {
			return disk.Errorf(disk.ErrInvalid, "config %s: unknown key %q (keys are the flags of 'vdisk %s -h')", path, k, fs.Name())
		}
		if set[k] {
			continue
		}
		vals := []string{v}
		if _, ok := f.Value.(*listFlag); ok {
			vals = strings.Split(v, ",")
		}
		for _, x := range vals {
			if err := fs.Set(k, strings.TrimSpace(x)); err != nil {
				return disk.Errorf(disk.ErrInvalid, "config %s: %s: %v", path, k, err)
			}
		}
	}
	return nil
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	if s == "" {
		return fmt.Errorf("empty value")
	}
	*l = append(*l, s)
	return nil
}
