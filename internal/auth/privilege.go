package auth

import (
	"strings"

	"github.com/vdisk-project/vdisk/disk"
)

// Privilege is a set of permissions, one bit each.
type Privilege uint32

// The privileges. See the package documentation for the role table.
const (
	// Read allows read-only access tickets, listing disks and snapshots and
	// reading changed areas.
	Read Privilege = 1 << iota
	// Write allows read-write access tickets (restore, writes to a disk).
	Write
	// Snapshot allows creating and deleting snapshots.
	Snapshot
	// ManageAccess allows revoking other users' sessions and tickets.
	ManageAccess
	// Admin allows managing users, roles and host configuration.
	Admin
)

var privNames = []struct {
	p    Privilege
	name string
}{{Read, "read"}, {Write, "write"}, {Snapshot, "snapshot"}, {ManageAccess, "manage-access"}, {Admin, "admin"}}

// Has reports whether p contains every privilege in q.
func (p Privilege) Has(q Privilege) bool { return p&q == q }

// String lists the privileges joined by "+", or "none".
func (p Privilege) String() string {
	var parts []string
	for _, n := range privNames {
		if p.Has(n.p) {
			parts = append(parts, n.name)
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "+")
}

// Role is a named set of privileges given to a user.
type Role string

// The roles.
const (
	RoleReadOnly Role = "read-only"
	RoleBackup   Role = "backup"
	RoleRestore  Role = "restore"
	RoleAdmin    Role = "admin"
)

// rolePrivileges is the role table; keep it in sync with doc.go.
var rolePrivileges = map[Role]Privilege{
	RoleReadOnly: Read,
	RoleBackup:   Read | Snapshot,
	RoleRestore:  Read | Write | Snapshot,
	RoleAdmin:    Read | Write | Snapshot | ManageAccess | Admin,
}

// Roles lists the roles from least to most privileged.
func Roles() []Role { return []Role{RoleReadOnly, RoleBackup, RoleRestore, RoleAdmin} }

// Privileges returns the role's privileges; an unknown role has none.
func (r Role) Privileges() Privilege { return rolePrivileges[r] }

// Valid reports whether r is one of the defined roles.
func (r Role) Valid() bool { _, ok := rolePrivileges[r]; return ok }

// ParseRole parses a role name. An unknown name is disk.ErrInvalid.
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if !r.Valid() {
		return "", disk.Errorf(disk.ErrInvalid, "auth: unknown role %q", s)
	}
	return r, nil
}
