package devstack

import (
	"strings"
	"testing"
)

// TestLeastPrivilegeNeedsMigrate: the role is granted the migrated tables,
// so a stack without the schema cannot have it; Start says so before it
// starts anything.
func TestLeastPrivilegeNeedsMigrate(t *testing.T) {
	s, err := Start(t.Context(), Options{LeastPrivilege: true})
	if err == nil {
		s.Close()
		t.Fatal("Start with LeastPrivilege and no Migrate succeeded")
	}
	if !strings.Contains(err.Error(), "Migrate") {
		t.Errorf("err = %v; want it to name Migrate", err)
	}
}
