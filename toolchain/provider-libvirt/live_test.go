package main

// Live tests against the lab's libvirtd, run only with PROVIDER_LIBVIRT_LIVE=1:
//   - domains and networks in the daemon's test:///default driver (no real qemu, no bridges);
//   - a pool in /var/lib/libvirt/p12-pool with small volumes and a cloud-init seed (qemu:///system).
// Every object is named p12-* and deleted at the end.

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"libvirt.org/go/libvirtxml"
)

func live(t *testing.T, uri string) *libvirtProvider {
	t.Helper()
	if os.Getenv("PROVIDER_LIBVIRT_LIVE") != "1" {
		t.Skip("set PROVIDER_LIBVIRT_LIVE=1 to run against a libvirtd")
	}
	shutdownGrace = 0
	p := newProvider(nil)
	p.uri = uri
	return p
}

func urnOf(typ, name string) string { return "urn:pulumi:t::p::" + typ + "::" + name }

// engine drives one resource the way the Pulumi engine does: Check, then Create / Diff+Update.
type engine struct {
	t      *testing.T
	p      *libvirtProvider
	urn    string
	id     string
	inputs resource.PropertyMap
	outs   resource.PropertyMap
}

func (e *engine) check(news resource.PropertyMap) resource.PropertyMap {
	e.t.Helper()
	s, _ := marshal(news)
	r, err := e.p.Check(context.Background(), &pulumirpc.CheckRequest{Urn: e.urn, News: s})
	if err != nil || len(r.Failures) > 0 {
		e.t.Fatalf("check %s: %v %v", e.urn, err, r.GetFailures())
	}
	m, _ := unmarshal(r.Inputs)
	return m
}

func (e *engine) create(news resource.PropertyMap) {
	e.t.Helper()
	in := e.check(news)
	s, _ := marshal(in)
	r, err := e.p.Create(context.Background(), &pulumirpc.CreateRequest{Urn: e.urn, Properties: s})
	if err != nil {
		e.t.Fatalf("create %s: %v", e.urn, err)
	}
	e.id, e.inputs = r.Id, in
	e.outs, _ = unmarshal(r.Properties)
}

// refresh is `pulumi refresh`: false when the object is gone.
func (e *engine) refresh() bool {
	e.t.Helper()
	in, _ := marshal(e.inputs)
	outs, _ := marshal(e.outs)
	r, err := e.p.Read(context.Background(), &pulumirpc.ReadRequest{Urn: e.urn, Id: e.id, Inputs: in, Properties: outs})
	if err != nil {
		e.t.Fatalf("read %s: %v", e.urn, err)
	}
	if r.Id == "" {
		return false
	}
	e.inputs, _ = unmarshal(r.Inputs)
	e.outs, _ = unmarshal(r.Properties)
	return true
}

// up diffs the program's inputs against the state and updates in place; it returns the diff.
func (e *engine) up(news resource.PropertyMap) *pulumirpc.DiffResponse {
	e.t.Helper()
	in := e.check(news)
	olds, _ := marshal(e.inputs)
	outs, _ := marshal(e.outs)
	n, _ := marshal(in)
	d, err := e.p.Diff(context.Background(), &pulumirpc.DiffRequest{Urn: e.urn, Id: e.id, OldInputs: olds, Olds: outs, News: n})
	if err != nil {
		e.t.Fatal(err)
	}
	if d.Changes == pulumirpc.DiffResponse_DIFF_SOME && len(d.Replaces) == 0 {
		r, err := e.p.Update(context.Background(), &pulumirpc.UpdateRequest{Urn: e.urn, Id: e.id, OldInputs: olds, Olds: outs, News: n})
		if err != nil {
			e.t.Fatalf("update %s: %v", e.urn, err)
		}
		e.inputs = in
		e.outs, _ = unmarshal(r.Properties)
	}
	return d
}

func (e *engine) delete() {
	e.t.Helper()
	if _, err := e.p.Delete(context.Background(), &pulumirpc.DeleteRequest{Urn: e.urn, Id: e.id}); err != nil {
		e.t.Errorf("delete %s: %v", e.urn, err)
	}
}

func pm(m map[string]any) resource.PropertyMap { return resource.NewPropertyMapFromMap(m) }

func TestLiveDomainLifecycleOnTestDriver(t *testing.T) {
	p := live(t, "test:///default")
	net := &engine{t: t, p: p, urn: urnOf("libvirt:index/network:Network", "net")}
	netIn := pm(map[string]any{"name": "p12-net", "mode": "nat", "addresses": []any{"10.212.1.0/24"},
		"dhcp": map[string]any{"enabled": false}})
	net.create(netIn)
	defer net.delete()

	dom := &engine{t: t, p: p, urn: urnOf("libvirt:index/domain:Domain", "dom")}
	domIn := pm(map[string]any{"name": "p12-dom", "type": "qemu", "vcpu": 1, "memory": 128,
		"networkInterfaces": []any{map[string]any{"networkId": net.id, "mac": "52:54:00:0A:D4:01", "hostname": "x"}},
		"autostart":         true})
	dom.create(domIn)
	defer dom.delete()

	if !dom.refresh() {
		t.Fatal("domain gone right after create")
	}
	if d := dom.up(domIn); d.Changes != pulumirpc.DiffResponse_DIFF_NONE {
		t.Fatalf("refresh of an untouched domain shows drift: %v\n%v", d, dom.inputs)
	}
	// Shut down out of band: refresh reports running=false, up starts it again in place.
	o, _ := p.op(dom.urn)
	d, err := byUUID(dom.id, o.l.DomainLookupByUUID)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.l.DomainDestroy(d); err != nil {
		t.Fatal(err)
	}
	dom.refresh()
	if v := dom.inputs["running"]; !v.IsBool() || v.BoolValue() {
		t.Fatalf("refresh must report running=false: %v", dom.inputs)
	}
	if diff := dom.up(domIn); len(diff.Replaces) != 0 || len(diff.Diffs) != 1 || diff.Diffs[0] != "running" {
		t.Fatalf("a stopped domain is updated in place (running), not replaced: %v", diff)
	}
	if running, _ := domainRunning(o.l, d); !running {
		t.Error("up did not start the domain")
	}
	if d2, _ := byUUID(dom.id, o.l.DomainLookupByUUID); d2.UUID != d.UUID {
		t.Error("the UUID changed")
	}
	// Drift in a replace-only property: the description. The name stays: the old one goes first.
	dom.inputs["description"] = resource.NewStringProperty("changed")
	if diff := dom.up(domIn); len(diff.Replaces) != 1 || diff.Replaces[0] != "description" || !diff.DeleteBeforeReplace {
		t.Errorf("description drift replaces, old one first: %v", diff)
	}
	delete(dom.inputs, "description")
	// Import: Read without inputs gives them from libvirt.
	imp := &engine{t: t, p: p, urn: dom.urn, id: dom.id, inputs: resource.PropertyMap{}, outs: resource.PropertyMap{}}
	imp.refresh()
	if imp.inputs["name"].StringValue() != "p12-dom" || imp.inputs["memory"].NumberValue() != 128 ||
		imp.inputs["networkInterfaces"].ArrayValue()[0].ObjectValue()["mac"].StringValue() != "52:54:00:0a:d4:01" {
		t.Errorf("import: %v", imp.inputs)
	}
	// memory and vcpu change in place: same UUID and MAC, restarted (a new domain id) cleanly.
	shutdownGrace = 5 * time.Second // the test driver shuts a guest down at once
	defer func() { shutdownGrace = 0 }()
	before, _ := byUUID(dom.id, o.l.DomainLookupByUUID)
	resized := domIn.Copy()
	resized["memory"], resized["vcpu"] = resource.NewNumberProperty(192), resource.NewNumberProperty(2)
	if diff := dom.up(resized); len(diff.Replaces) != 0 || !reflect.DeepEqual(diff.Diffs, []string{"memory", "vcpu"}) {
		t.Fatalf("memory/vcpu change in place: %v", diff)
	}
	after, err := byUUID(dom.id, o.l.DomainLookupByUUID)
	if err != nil || after.ID == before.ID {
		t.Errorf("domain not restarted (id %d -> %d): %v", before.ID, after.ID, err)
	}
	x, err := parseXML[libvirtxml.Domain](o.l.DomainGetXMLDesc(after, 0)) // the running guest's
	if err != nil || x.Memory.Value != 192<<10 || x.VCPU.Value != 2 || x.Devices.Interfaces[0].MAC.Address != "52:54:00:0a:d4:01" {
		t.Errorf("running definition after resize: %+v %+v %v", x.Memory, x.VCPU, err)
	}
	if dom.refresh(); dom.up(resized).Changes != pulumirpc.DiffResponse_DIFF_NONE {
		t.Errorf("drift after resize: %v", dom.inputs)
	}
	// running=false shuts it down cleanly (within the grace, no power-off).
	stopped := resized.Copy()
	stopped["running"] = resource.NewBoolProperty(false)
	dom.up(stopped)
	if state, reason, _ := o.l.DomainGetState(after, 0); libvirt.DomainState(state) != libvirt.DomainShutoff ||
		libvirt.DomainShutoffReason(reason) != libvirt.DomainShutoffShutdown {
		t.Errorf("state %d reason %d, want shut off by a shutdown", state, reason)
	}
	// Undefined out of band: refresh drops it.
	if err := o.l.DomainUndefineFlags(d, 0); err != nil {
		t.Fatal(err)
	}
	if dom.refresh() {
		t.Error("an undefined domain must leave the state")
	}
	// Network: autostart in place; DHCP on and off live.
	if !net.refresh() {
		t.Fatal("network gone")
	}
	if diff := net.up(netIn); diff.Changes != pulumirpc.DiffResponse_DIFF_NONE {
		t.Errorf("untouched network shows drift: %v %v", diff, net.inputs)
	}
	netIn2 := netIn.Copy()
	netIn2["autostart"] = resource.NewBoolProperty(true)
	netIn2["dhcp"] = resource.NewObjectProperty(pm(map[string]any{"enabled": true}))
	if diff := net.up(netIn2); len(diff.Replaces) != 0 {
		t.Errorf("autostart/dhcp are in place: %v", diff)
	}
	net.refresh()
	if !net.inputs["autostart"].BoolValue() || !net.inputs["dhcp"].ObjectValue()["enabled"].BoolValue() {
		t.Errorf("after update: %v", net.inputs)
	}
	if p.dials != 1 {
		t.Errorf("%d connections, want 1", p.dials)
	}
}

func TestLiveStorageOnSystem(t *testing.T) {
	p := live(t, "qemu:///system")
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", base, "16M").CombinedOutput(); err != nil {
		t.Skipf("qemu-img: %v %s", err, out)
	}
	pool := &engine{t: t, p: p, urn: urnOf("libvirt:index/pool:Pool", "pool")}
	poolIn := pm(map[string]any{"name": "p12-pool", "type": "dir", "path": "/var/lib/libvirt/p12-pool"})
	pool.create(poolIn)
	defer pool.delete()

	img := &engine{t: t, p: p, urn: urnOf("libvirt:index/volume:Volume", "base")}
	img.create(pm(map[string]any{"name": "p12-base", "pool": "p12-pool", "source": base}))
	defer img.delete()
	if img.outs["format"].StringValue() != "qcow2" || img.outs["size"].NumberValue() != 16<<20 {
		t.Errorf("uploaded qcow2: format and virtual size: %v", img.outs)
	}
	ov := &engine{t: t, p: p, urn: urnOf("libvirt:index/volume:Volume", "ov")}
	ovIn := pm(map[string]any{"name": "p12-ov.qcow2", "pool": "p12-pool", "baseVolumeId": img.id, "format": "qcow2"})
	ov.create(ovIn)
	defer ov.delete()
	seed := &engine{t: t, p: p, urn: urnOf("libvirt:index/cloudInitDisk:CloudInitDisk", "seed")}
	seedIn := pm(map[string]any{"name": "p12-seed.iso", "pool": "p12-pool", "userData": "#cloud-config\n",
		"metaData": "instance-id: p12\n"})
	seed.create(seedIn)
	defer seed.delete()
	if path, u, ok := strings.Cut(seed.id, ";"); !ok || path != "/var/lib/libvirt/p12-pool/p12-seed.iso" || len(u) != 36 {
		t.Errorf("CloudInitDisk id %q: want upstream's path;uuid", seed.id)
	}
	for _, e := range []*engine{pool, img, ov, seed} {
		if !e.refresh() {
			t.Fatalf("%s gone", e.urn)
		}
	}
	if ov.outs["baseVolumeId"].StringValue() != img.id || ov.outs["size"].NumberValue() != 16<<20 {
		t.Errorf("overlay read back: %v", ov.outs)
	}
	for e, in := range map[*engine]resource.PropertyMap{pool: poolIn, ov: ovIn, seed: seedIn} {
		if d := e.up(in); d.Changes != pulumirpc.DiffResponse_DIFF_NONE {
			t.Errorf("%s: no drift expected: %v %v", e.urn, d, e.inputs)
		}
	}
	// File modes: the pool directory 0711, each volume 0600 (the seed holds secrets).
	for path, want := range map[string]os.FileMode{"/var/lib/libvirt/p12-pool": 0o711,
		"/var/lib/libvirt/p12-pool/p12-seed.iso": 0o600, "/var/lib/libvirt/p12-pool/p12-ov.qcow2": 0o600} {
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v (%v)", path, st.Mode().Perm(), want, err)
		}
	}
	// A base that an overlay still uses is not deleted.
	if _, err := p.Delete(context.Background(), &pulumirpc.DeleteRequest{Urn: img.urn, Id: img.id}); err == nil ||
		!strings.Contains(err.Error(), "still the base of p12-ov.qcow2") {
		t.Errorf("deleting a base in use: %v", err)
	}
	// A new user-data rewrites the seed in place: same id and path, new content.
	seedIn2 := seedIn.Copy()
	seedIn2["userData"] = resource.NewStringProperty("#cloud-config\nhostname: p12b\n")
	if d := seed.up(seedIn2); len(d.Replaces) != 0 || d.Changes != pulumirpc.DiffResponse_DIFF_SOME {
		t.Errorf("seed userData in place: %v", d)
	}
	if raw, err := os.ReadFile("/var/lib/libvirt/p12-pool/p12-seed.iso"); err != nil || !strings.Contains(string(raw), "p12b") {
		t.Errorf("rewritten seed: %v", err)
	}
	if p.dials != 1 {
		t.Errorf("%d connections, want 1", p.dials)
	}
}

// TestLiveSSHTransport runs the ssh dialer against a stand-in `ssh` (first on PATH) that records
// its arguments and bridges to the local socket with socat, so no network is involved.
func TestLiveSSHTransport(t *testing.T) {
	live(t, "")
	if _, err := exec.LookPath("socat"); err != nil {
		t.Skip("socat not installed")
	}
	dir := t.TempDir()
	script := "#!/bin/sh\necho \"$@\" >" + dir + "/args\nfor a; do sock=$a; done\nexec socat STDIO UNIX-CONNECT:$sock\n"
	if err := os.WriteFile(filepath.Join(dir, "ssh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	l, err := dial("test+ssh://admin@hv1:2222/default?keyfile=/k/id&socket=/var/run/libvirt/libvirt-sock")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Disconnect()
	if _, err := l.ConnectGetLibVersion(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.DomainLookupByName("p12-nope"); !isNotFound(err) {
		t.Errorf("lookup of a missing domain: %v, want a typed not-found", err)
	}
	args, _ := os.ReadFile(filepath.Join(dir, "args"))
	if got := strings.TrimSpace(string(args)); got != "-T -e none -o BatchMode=yes -p 2222 -l admin -i /k/id -- hv1 nc -U /var/run/libvirt/libvirt-sock" {
		t.Errorf("ssh arguments: %s", got)
	}
}

// TestLiveProgramShapeHasNoDrift creates, on qemu:///system, objects shaped as components/*.py makes
// them (a NAT network without DHCP, a dir pool, an uploaded qcow2 base and raw kernel, an overlay, a
// seed, a TCG domain with the project's XSLT, defined but never started) and checks that a refresh
// right after finds no drift: refresh-before-update must never replace a VM that nobody touched.
func TestLiveProgramShapeHasNoDrift(t *testing.T) {
	p := live(t, "qemu:///system")
	dir := t.TempDir()
	base, kernel := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "vmlinuz")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", base, "16M").CombinedOutput(); err != nil {
		t.Skipf("qemu-img: %v %s", err, out)
	}
	if err := os.WriteFile(kernel, []byte("MZ not really a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	xslt, err := os.ReadFile("../../templates/domain-tcg.xsl")
	if err != nil {
		t.Fatal(err)
	}
	var all []*engine
	mk := func(typ, name string, in map[string]any) *engine {
		e := &engine{t: t, p: p, urn: urnOf("libvirt:index/"+typ, name)}
		e.create(pm(in))
		e.inputs = e.check(pm(in))
		all = append(all, e)
		return e
	}
	defer func() {
		for i := len(all) - 1; i >= 0; i-- {
			all[i].delete()
		}
	}()
	net := mk("network:Network", "net", map[string]any{"name": "p12-net", "mode": "nat",
		"addresses": []any{"10.212.2.0/24"}, "autostart": false, "dhcp": map[string]any{"enabled": false}})
	mk("pool:Pool", "pool", map[string]any{"name": "p12-pool", "type": "dir", "path": "/var/lib/libvirt/p12-pool"})
	img := mk("volume:Volume", "base", map[string]any{"name": "p12-base", "pool": "p12-pool", "source": base, "format": "qcow2"})
	kern := mk("volume:Volume", "kernel", map[string]any{"name": "p12-kernel", "pool": "p12-pool", "source": kernel, "format": "raw"})
	disk := mk("volume:Volume", "disk", map[string]any{"name": "p12-web01.qcow2", "pool": "p12-pool",
		"baseVolumeId": img.id, "format": "qcow2"})
	seed := mk("cloudInitDisk:CloudInitDisk", "seed", map[string]any{"name": "p12-web01-seed.iso", "pool": "p12-pool",
		"userData": "#cloud-config\n", "networkConfig": "version: 2\n", "metaData": "instance-id: p12\n"})
	dom := mk("domain:Domain", "dom", map[string]any{"name": "p12-web01", "type": "qemu", "vcpu": 1, "memory": 512,
		"cloudinit": seed.id, "disks": []any{map[string]any{"volumeId": disk.id}},
		"networkInterfaces": []any{map[string]any{"networkId": net.id, "mac": "52:54:00:0A:D4:02", "hostname": "web01"}},
		"consoles":          []any{map[string]any{"type": "pty", "targetPort": "0", "targetType": "serial"}},
		"xml":               map[string]any{"xslt": string(xslt)}, "autostart": false, "running": false,
		"kernel": kern.id, "initrd": kern.id,
		"cmdlines": []any{map[string]any{"root": "/dev/vda", "console": "ttyS0", "net.ifnames": "0"}, map[string]any{"_": "rw"}}})
	for _, e := range all {
		in := e.inputs.Copy()
		if !e.refresh() {
			t.Fatalf("%s: gone after create", e.urn)
		}
		if d := e.up(in); d.Changes != pulumirpc.DiffResponse_DIFF_NONE {
			t.Errorf("%s: drift right after create: %v\nstored %v\nseen %v", e.urn, d.Diffs, in, e.inputs)
		}
	}
	o, _ := p.op(dom.urn)
	d, _ := byUUID(dom.id, o.l.DomainLookupByUUID)
	doc, _ := o.l.DomainGetXMLDesc(d, 0)
	if !strings.Contains(doc, "tb-cache") || !strings.Contains(doc, "p12-web01-seed.iso") {
		t.Errorf("the XSLT (tb-cache) or the seed is missing:\n%s", doc)
	}
}

// TestLiveVolumeGrowOnTestDriver: a volume's size is updated in place (the same key), a shrink is refused
// before libvirt is asked, and the running domains of a disk are found by their disk. The test driver has
// no virStorageVolResize: the grow itself reaches libvirt's resize of the same volume and is refused there
// (on a real pool it is qemu-img resize; the e2e case grows a node's disk under load).
func TestLiveVolumeGrowOnTestDriver(t *testing.T) {
	p := live(t, "test:///default")
	vol := &engine{t: t, p: p, urn: urnOf("libvirt:index/volume:Volume", "vol")}
	in := pm(map[string]any{"name": "p12-grow.img", "pool": "default-pool", "size": 16 << 20, "format": "raw"})
	vol.create(in)
	defer vol.delete()
	key := vol.id
	update := func(size int) (*pulumirpc.DiffResponse, error) {
		news := in.Copy()
		news["size"] = resource.NewNumberProperty(float64(size))
		news = vol.check(news)
		olds, _ := marshal(vol.inputs)
		outs, _ := marshal(vol.outs)
		n, _ := marshal(news)
		d, err := p.Diff(context.Background(), &pulumirpc.DiffRequest{Urn: vol.urn, Id: vol.id, OldInputs: olds, Olds: outs, News: n})
		if err != nil {
			t.Fatal(err)
		}
		_, err = p.Update(context.Background(), &pulumirpc.UpdateRequest{Urn: vol.urn, Id: vol.id, OldInputs: olds, Olds: outs, News: n})
		return d, err
	}
	d, err := update(8 << 20)
	if len(d.Replaces) != 0 || err == nil || !strings.Contains(err.Error(), "is smaller than its capacity 16777216 bytes: a volume only grows") {
		t.Errorf("shrink: diff %v, update %v; want in place and refused", d, err)
	}
	d, err = update(32 << 20)
	if len(d.Replaces) != 0 || err == nil || !strings.Contains(err.Error(), "virStorageVolResize") ||
		!strings.Contains(err.Error(), `volume "p12-grow.img": growing to 33554432 bytes`) {
		t.Errorf("grow: diff %v, update %v; want in place, reaching the test driver's (missing) resize", d, err)
	}
	if !vol.refresh() || vol.id != key || vol.inputs["size"].NumberValue() != 16<<20 {
		t.Errorf("after both: the same volume at its size: %s %v", vol.id, vol.inputs)
	}
	// An overlay smaller than its base is refused (not silently made at the base's size).
	ov := &engine{t: t, p: p, urn: urnOf("libvirt:index/volume:Volume", "ov")}
	s, _ := marshal(ov.check(pm(map[string]any{"name": "p12-grow-ov.qcow2", "pool": "default-pool", "baseVolumeId": key,
		"format": "qcow2", "size": 8 << 20})))
	if r, err := p.Create(context.Background(), &pulumirpc.CreateRequest{Urn: ov.urn, Properties: s}); err == nil ||
		!strings.Contains(err.Error(), "is smaller than its base volume's virtual size 16777216 bytes") {
		if err == nil {
			ov.id = r.Id
			ov.delete()
		}
		t.Errorf("overlay smaller than its base: %v", err)
	}
	o, _ := p.op(vol.urn)
	users, err := runningWithDisk(o.l, "/guest/diskimage1", "")
	if err != nil || len(users) != 1 || users[0].Name != "test" {
		t.Errorf("the test driver's running domain %q has /guest/diskimage1: %v %v", "test", users, err)
	}
	if users, err := runningWithDisk(o.l, key, key); err != nil || len(users) != 0 {
		t.Errorf("no domain has %s: %v %v", key, users, err)
	}
}
