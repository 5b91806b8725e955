package server

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestOpenAPICoversRoutes keeps api/openapi.yaml and the routes the
// server registers (publicRoutes and the apiRoutes table) in step: every
// route is documented and every documented operation exists.
func TestOpenAPICoversRoutes(t *testing.T) {
	routes := slices.Clone(publicRoutes)
	for _, rt := range new(Server).apiRoutes() {
		routes = append(routes, rt.pattern)
	}
	if len(routes) < 40 {
		t.Fatalf("found only %d routes; the table is stale", len(routes))
	}
	spec, err := os.ReadFile("../api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	path := ""
	inPaths := false
	for _, line := range strings.Split(string(spec), "\n") {
		switch {
		case line == "paths:":
			inPaths = true
		case inPaths && len(line) > 0 && line[0] != ' ':
			inPaths = false
		case inPaths && strings.HasPrefix(line, "  /") && strings.HasSuffix(line, ":"):
			path = strings.TrimSuffix(strings.TrimSpace(line), ":")
		case inPaths && regexp.MustCompile(`^    (get|post|put|patch|delete):$`).MatchString(line):
			documented = append(documented, strings.ToUpper(strings.TrimSuffix(strings.TrimSpace(line), ":"))+" "+path)
		}
	}
	slices.Sort(routes)
	slices.Sort(documented)
	for _, r := range routes {
		if !slices.Contains(documented, r) {
			t.Errorf("route %s is missing from api/openapi.yaml", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(routes, d) {
			t.Errorf("api/openapi.yaml documents %s, which the server does not serve", d)
		}
	}
}
