package cli

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestOutputValues checks that every command taking --output accepts only
// human and json, in each flag form, and refuses anything else as a usage
// error before doing any work.
func TestOutputValues(t *testing.T) {
	img := filepath.Join(t.TempDir(), "o.vmdk")
	mustRun(t, "create", "-f", "vmdk", img, "1M")
	t.Setenv("VDISK_CONFIG_DIR", t.TempDir()) // host commands find no login
	commands := [][]string{
		{"info", img}, {"map", img}, {"map", "--chunk-size", "1M", img}, {"check", img}, {"meta", img},
		{"login", "--server", "127.0.0.1:1"}, {"vm", "list"}, {"disk", "list"}, {"user", "list"},
	}
	forms := [][]string{{"--output=xml"}, {"--output", "xml"}, {"-output=yaml"}, {"-output", "JSON"}, {"--output="}}
	for _, c := range commands {
		for _, f := range forms {
			args := append(append([]string{c[0]}, f...), c[1:]...)
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				out, errs, code := run(t, args...)
				if code != ExitUsage || out != "" || !strings.Contains(errs, "--output must be human or json") {
					t.Errorf("exit %d, want %d; stdout %q; stderr %q", code, ExitUsage, out, errs)
				}
			})
		}
	}
	// The accepted values, in the separate-argument form too.
	for _, f := range [][]string{{"--output", "json"}, {"-output=json"}} {
		out := mustRun(t, append(append([]string{"info"}, f...), img)...)
		var in imageInfo
		if err := json.Unmarshal([]byte(out), &in); err != nil || in.Format != "vmdk" {
			t.Errorf("info %v: %v\n%s", f, err, out)
		}
	}
	if out := mustRun(t, "info", "--output", "human", img); !strings.HasPrefix(out, "image: "+img+"\n") {
		t.Errorf("info --output human:\n%s", out)
	}
	// An error under --output json (either form) is JSON on stdout.
	out, _, code := run(t, "info", "--output", "json", img+".missing")
	var e struct{ Error, Code string }
	if err := json.Unmarshal([]byte(out), &e); err != nil || code != ExitNotFound || e.Error == "" {
		t.Errorf("info of a missing image with --output json: exit %d, stdout %q", code, out)
	}
	// "--" ends the flags: an image named --output=xml is an image.
	if _, errs, code := run(t, "info", "--", "--output=xml"); code != ExitNotFound {
		t.Errorf("info -- --output=xml: exit %d, want %d (not found)\n%s", code, ExitNotFound, errs)
	}
}
