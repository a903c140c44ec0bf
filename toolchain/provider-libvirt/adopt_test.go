package main

import (
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"libvirt.org/go/libvirtxml"
)

func TestMarkerIsTheStacksAndTheObjects(t *testing.T) {
	urn := "urn:pulumi:dev::hacluster::hacluster:index:VirtualMachine$libvirt:index/domain:Domain::web01-domain"
	if own, err := owner(urn); err != nil || own != "hacluster/dev" {
		t.Fatalf("owner %q %v", own, err)
	}
	a, _ := markerUUID(urn, "domain", "dev-web01")
	b, _ := markerUUID(urn, "domain", "dev-web01")
	if a != b {
		t.Fatal("the marker must be the same every time")
	}
	for _, other := range [][3]string{
		{"urn:pulumi:prod::hacluster::libvirt:index/domain:Domain::web01-domain", "domain", "dev-web01"}, // another stack
		{urn, "network", "dev-web01"}, // another kind
		{urn, "domain", "dev-web02"},  // another object
	} {
		if m, _ := markerUUID(other[0], other[1], other[2]); m == a {
			t.Errorf("%v has the same marker", other)
		}
	}
	if _, err := markerUUID("not-a-urn", "domain", "x"); err == nil {
		t.Error("a bad URN must be refused")
	}
}

func TestRefusalSaysWhatAndHowToRemoveIt(t *testing.T) {
	err := notOurs(urnOf("libvirt:index/network:Network", "net"), "network", "n1", "its UUID x is not the stack's marker",
		"virsh net-destroy n1; virsh net-undefine n1")
	want := "network \"n1\" already exists in libvirt and is not stack p/t's (its UUID x is not the stack's marker): it " +
		"was made by hand, by another stack, or before this plugin marked what it makes; remove it (virsh net-destroy " +
		"n1; virsh net-undefine n1) or rename it, then run `pulumi up` again"
	if err.Error() != want {
		t.Fatalf("%s\nwant %s", err, want)
	}
}

// createErr is Create as the engine sends it, returning the error (engine.create fails the test on one).
func createErr(t *testing.T, p *libvirtProvider, urn string, news resource.PropertyMap) (string, error) {
	t.Helper()
	e := &engine{t: t, p: p, urn: urn}
	s, _ := marshal(e.check(news))
	r, err := p.Create(context.Background(), &pulumirpc.CreateRequest{Urn: urn, Properties: s})
	return r.GetId(), err
}

// After a `pulumi up` killed during Create (the object made, the state without it), the rerun's Create
// adopts what carries the stack's marker and refuses a same-named object that does not.
func TestLiveAdoptOnTestDriver(t *testing.T) {
	p := live(t, "test:///default")
	o, err := p.op("x")
	if err != nil {
		t.Fatal(err)
	}

	// Network: made, "forgotten" (a pending create cleared), stopped out of band, created again: adopted.
	netURN := urnOf("libvirt:index/network:Network", "net")
	netIn := pm(map[string]any{"name": "p12-adopt-net", "mode": "nat", "addresses": []any{"10.212.9.0/24"},
		"dhcp": map[string]any{"enabled": false}})
	first := &engine{t: t, p: p, urn: netURN}
	first.create(netIn)
	defer first.delete()
	if want, _ := markerUUID(netURN, "network", "p12-adopt-net"); first.id != want {
		t.Fatalf("network id %s, want the marker %s", first.id, want)
	}
	n, _ := byUUID(first.id, o.l.NetworkLookupByUUID)
	if err := o.l.NetworkDestroy(n); err != nil {
		t.Fatal(err)
	}
	again := &engine{t: t, p: p, urn: netURN}
	again.create(netIn)
	if again.id != first.id {
		t.Fatalf("network made anew (%s), not adopted (%s)", again.id, first.id)
	}
	if active, _ := o.l.NetworkIsActive(n); active != 1 {
		t.Error("the adopted network must run again")
	}

	// Domain: the same, shut off first.
	domURN := urnOf("libvirt:index/domain:Domain", "dom")
	domIn := pm(map[string]any{"name": "p12-adopt-dom", "type": "qemu", "vcpu": 1, "memory": 128,
		"networkInterfaces": []any{map[string]any{"networkId": first.id, "mac": "52:54:00:0A:D4:09"}}})
	dom := &engine{t: t, p: p, urn: domURN}
	dom.create(domIn)
	d, _ := byUUID(dom.id, o.l.DomainLookupByUUID)
	defer func() { // the test driver refuses deleteDomain's undefine flags
		_ = o.l.DomainDestroy(d)
		if err := o.l.DomainUndefineFlags(d, 0); err != nil {
			t.Errorf("undefine %s: %v", "p12-adopt-dom", err)
		}
	}()
	if err := o.l.DomainDestroy(d); err != nil {
		t.Fatal(err)
	}
	dom2 := &engine{t: t, p: p, urn: domURN}
	dom2.create(domIn)
	if dom2.id != dom.id {
		t.Fatalf("domain made anew (%s), not adopted (%s)", dom2.id, dom.id)
	}
	if running, _ := domainRunning(o.l, d); !running {
		t.Error("the adopted domain must run")
	}
	if mac := dom2.outs["networkInterfaces"].ArrayValue()[0].ObjectValue()["mac"].StringValue(); !strings.EqualFold(mac, "52:54:00:0a:d4:09") {
		t.Errorf("adopted outputs: mac %q", mac)
	}

	// Another stack's domain of the same name (its own marker): refused, with the fix.
	_, err = createErr(t, p, "urn:pulumi:other::p::libvirt:index/domain:Domain::dom", domIn)
	if err == nil || !strings.Contains(err.Error(), `domain "p12-adopt-dom" already exists in libvirt and is not stack p/other's`) ||
		!strings.Contains(err.Error(), "virsh destroy p12-adopt-dom; virsh undefine p12-adopt-dom") {
		t.Errorf("another stack's domain: %v", err)
	}

	// A network made by hand (a random UUID): refused.
	hand := &libvirtxml.Network{Name: "p12-adopt-hand", UUID: uuid.NewString()}
	doc, _ := hand.Marshal()
	hn, err := o.l.NetworkDefineXML(doc)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = o.l.NetworkUndefine(hn) }()
	_, err = createErr(t, p, netURN, pm(map[string]any{"name": "p12-adopt-hand", "mode": "none"}))
	if err == nil || !strings.Contains(err.Error(), "virsh net-destroy p12-adopt-hand; virsh net-undefine p12-adopt-hand") {
		t.Errorf("a network made by hand: %v", err)
	}

	// Pool and an empty volume in it: adopted; a volume in a pool that is not the stack's: refused.
	poolURN := urnOf("libvirt:index/pool:Pool", "pool")
	poolIn := pm(map[string]any{"name": "p12-adopt-pool", "type": "dir", "path": "/p12-adopt-pool"})
	pool := &engine{t: t, p: p, urn: poolURN}
	pool.create(poolIn)
	defer pool.delete()
	pool2 := &engine{t: t, p: p, urn: poolURN}
	pool2.create(poolIn)
	if pool2.id != pool.id {
		t.Fatalf("pool made anew, not adopted")
	}
	volURN := urnOf("libvirt:index/volume:Volume", "vol")
	volIn := pm(map[string]any{"name": "p12-adopt.qcow2", "pool": "p12-adopt-pool", "size": 1 << 20})
	vol := &engine{t: t, p: p, urn: volURN}
	vol.create(volIn)
	defer vol.delete()
	vol2 := &engine{t: t, p: p, urn: volURN}
	vol2.create(volIn)
	if vol2.id != vol.id {
		t.Fatalf("volume made anew (%s), not adopted (%s)", vol2.id, vol.id)
	}
	dp, err := o.l.StoragePoolLookupByName("default-pool") // the test driver's own: not the stack's
	if err != nil {
		t.Skipf("no default-pool in the test driver: %v", err)
	}
	foreign := &libvirtxml.StorageVolume{Name: "p12-adopt-foreign.img",
		Capacity: &libvirtxml.StorageVolumeSize{Unit: "bytes", Value: 1 << 20}}
	vdoc, _ := foreign.Marshal()
	fv, err := o.l.StorageVolCreateXML(dp, vdoc, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = o.l.StorageVolDelete(fv, 0) }()
	_, err = createErr(t, p, volURN, pm(map[string]any{"name": "p12-adopt-foreign.img", "pool": "default-pool", "size": 1 << 20}))
	if err == nil || !strings.Contains(err.Error(), "its pool default-pool does not carry the stack's marker") ||
		!strings.Contains(err.Error(), "virsh vol-delete --pool default-pool p12-adopt-foreign.img") {
		t.Errorf("a volume in a pool that is not the stack's: %v", err)
	}
}
