package server

import "github.com/vdisk-project/vdisk/internal/auth"

// RoutePrivilege is one row of the route table, for the external tests.
type RoutePrivilege struct {
	Pattern string         // "METHOD /path"
	Need    auth.Privilege // what authed checks before the handler
}

// RouteTable returns the authenticated routes and their privileges, as
// routes registers them.
func RouteTable() []RoutePrivilege {
	var rs []RoutePrivilege
	for _, rt := range new(Server).apiRoutes() {
		rs = append(rs, RoutePrivilege{Pattern: rt.pattern, Need: rt.need})
	}
	return rs
}

// PublicRoutes are the routes served without a token.
var PublicRoutes = publicRoutes
