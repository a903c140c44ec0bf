package main

import "testing"

// Messages as virsh 9.0 prints them (-q) for objects that do not exist, and some that are not that.
func TestStderrNotFound(t *testing.T) {
	for s, want := range map[string]bool{
		"error: failed to get domain '46ce2344-c87a-4bd3-8bc8-d634d33cd7ff'":                                   true,
		"error: failed to get network '36e2'\nerror: Network not found: no network with matching name '36e2'":  true,
		"error: failed to get pool 'x'\nerror: Storage pool not found: no storage pool with matching name 'x'": true,
		"error: failed to get vol '/p/x', specifying --pool might help\n" +
			"error: Storage volume not found: no storage vol with matching path '/p/x'": true,
		"error: failed to connect to the hypervisor\nerror: Failed to connect socket":                            false,
		"error: Failed to start network n\nerror: internal error: Network is already in use by interface virbr1": false,
		"error: failed to get domain 'x'\nerror: some other failure":                                             false,
	} {
		if got := stderrNotFound(s); got != want {
			t.Errorf("stderrNotFound(%q) = %v, want %v", s, got, want)
		}
	}
}
