package hostclient

import "testing"

func TestNormalizeServer(t *testing.T) {
	for in, want := range map[string]string{
		"host":                              "host:" + DefaultPort,
		"host:9000":                         "host:9000",
		"[::1]:9000":                        "[::1]:9000",
		"::1":                               "[::1]:" + DefaultPort,
		"https://host:9000/api/v1":          "host:9000",
		"https://host:9000/api/v1/":         "host:9000",
		"https://host:9000/":                "host:9000",
		"https://[2001:db8::1]:8443/api/v1": "[2001:db8::1]:8443",
	} {
		if got := NormalizeServer(in); got != want {
			t.Errorf("NormalizeServer(%q) = %q, want %q", in, got, want)
		}
	}
}
