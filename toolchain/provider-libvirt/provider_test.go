package main

import (
	"context"
	"reflect"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

const domainURN = "urn:pulumi:dev::hacluster::hacluster:index:HaCluster$libvirt:index/domain:Domain::web01-domain"
const seedURN = "urn:pulumi:dev::hacluster::libvirt:index/cloudInitDisk:CloudInitDisk::web01-seed"

func mustMarshal(t *testing.T, m resource.PropertyMap) *pulumirpc.CheckRequest {
	t.Helper()
	s, err := marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return &pulumirpc.CheckRequest{News: s}
}

func TestCheckDefaultsUnknownsSecretsAndUnsupported(t *testing.T) {
	p := newProvider(nil)
	news := resource.PropertyMap{
		"name":  resource.NewStringProperty("dev-web01"),
		"disks": resource.NewArrayProperty([]resource.PropertyValue{resource.NewObjectProperty(resource.PropertyMap{"volumeId": resource.MakeComputed(resource.NewStringProperty(""))})}),
		"cmdlines": resource.NewArrayProperty([]resource.PropertyValue{resource.NewObjectProperty(resource.PropertyMap{
			"_": resource.NewStringProperty("rw")})}),
	}
	req := mustMarshal(t, news)
	req.Urn = domainURN
	resp, err := p.Check(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Failures) != 0 {
		t.Fatalf("failures: %v", resp.Failures)
	}
	got, _ := unmarshal(resp.Inputs)
	if got["type"].StringValue() != "kvm" || got["running"].BoolValue() != true || got["memory"].NumberValue() != 512 {
		t.Errorf("defaults not applied: %v", got)
	}
	if !got["disks"].ContainsUnknowns() {
		t.Errorf("unknown volumeId lost: %v", got["disks"])
	}

	news["macvtap"] = resource.NewStringProperty("eth0")
	req = mustMarshal(t, news)
	req.Urn = domainURN
	resp, _ = p.Check(context.Background(), req)
	if len(resp.Failures) != 1 || resp.Failures[0].Property != "macvtap" {
		t.Errorf("unsupported input should fail Check: %v", resp.Failures)
	}

	seed := resource.PropertyMap{"name": resource.NewStringProperty("s.iso"), "pool": resource.NewStringProperty("p"),
		"userData": resource.MakeSecret(resource.NewStringProperty("#cloud-config\n"))}
	req = mustMarshal(t, seed)
	req.Urn = seedURN
	resp, err = p.Check(context.Background(), req)
	if err != nil || len(resp.Failures) != 0 {
		t.Fatalf("seed check: %v %v", err, resp.GetFailures())
	}
	got, _ = unmarshal(resp.Inputs)
	if !got["userData"].IsSecret() {
		t.Errorf("userData lost its secretness: %v", got["userData"])
	}

	req = mustMarshal(t, resource.PropertyMap{"pool": resource.NewStringProperty("p")})
	req.Urn = seedURN
	resp, _ = p.Check(context.Background(), req)
	if len(resp.Failures) != 1 || resp.Failures[0].Property != "name" {
		t.Errorf("missing name: %v", resp.Failures)
	}
}

func TestDiffReplacesEveryChange(t *testing.T) {
	p := newProvider(nil)
	olds := resource.PropertyMap{"name": resource.NewStringProperty("s.iso"), "pool": resource.NewStringProperty("p"),
		"userData": resource.MakeSecret(resource.NewStringProperty("a"))}
	diff := func(news resource.PropertyMap) *pulumirpc.DiffResponse {
		o, _ := marshal(olds)
		n, _ := marshal(news)
		resp, err := p.Diff(context.Background(), &pulumirpc.DiffRequest{Urn: seedURN, OldInputs: o, Olds: o, News: n})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	same := olds.Copy()
	same["userData"] = resource.NewStringProperty("a") // secretness alone is no change
	if r := diff(same); r.Changes != pulumirpc.DiffResponse_DIFF_NONE {
		t.Errorf("no change expected: %v", r)
	}
	changed := olds.Copy()
	changed["userData"] = resource.MakeSecret(resource.NewStringProperty("b"))
	changed["pool"] = resource.MakeComputed(resource.NewStringProperty(""))
	r := diff(changed)
	if r.Changes != pulumirpc.DiffResponse_DIFF_SOME || !reflect.DeepEqual(r.Replaces, []string{"pool"}) ||
		!r.DeleteBeforeReplace {
		t.Errorf("replace of pool (unknown: the old one first) expected: %v", r)
	}
	// A new user-data alone rewrites the seed in place (for the node's next fresh boot).
	data := olds.Copy()
	data["userData"] = resource.MakeSecret(resource.NewStringProperty("b"))
	if r := diff(data); len(r.Replaces) != 0 || r.DetailedDiff["userData"].Kind != pulumirpc.PropertyDiff_UPDATE {
		t.Errorf("userData in place expected: %v", r)
	}
	// A seed with a new name is made beside the old one; with the same name, the old one goes first.
	renamed := olds.Copy()
	renamed["name"], renamed["metaData"] = resource.NewStringProperty("s2.iso"), resource.NewStringProperty("m")
	if r := diff(renamed); !reflect.DeepEqual(r.Replaces, []string{"metaData", "name"}) || r.DeleteBeforeReplace {
		t.Errorf("renamed: create before delete expected: %v", r)
	}
	delete(renamed, "name")
	renamed["name"] = olds["name"]
	if r := diff(renamed); !reflect.DeepEqual(r.Replaces, []string{"metaData"}) || !r.DeleteBeforeReplace {
		t.Errorf("same name: delete before create expected: %v", r)
	}
}

func TestUnknownTypeIsRefused(t *testing.T) {
	p := newProvider(nil)
	_, err := p.Check(context.Background(), &pulumirpc.CheckRequest{
		Urn: "urn:pulumi:dev::hacluster::libvirt:index/ignition:Ignition::x"})
	if err == nil {
		t.Error("expected an error for an unimplemented type")
	}
}

func TestCheckDomainWithNetworkID(t *testing.T) {
	a := clusterDomain()
	if err := validateDomain(&a); err != nil {
		t.Errorf("a NIC with only a networkId is valid: %v", err)
	}
}

func TestDiffDomainInPlace(t *testing.T) {
	p := newProvider(nil)
	olds := resource.PropertyMap{"name": resource.NewStringProperty("d"), "running": resource.NewBoolProperty(false),
		"autostart": resource.NewBoolProperty(false), "vcpu": resource.NewNumberProperty(1),
		"memory": resource.NewNumberProperty(512), "kernel": resource.NewStringProperty("/k1")}
	diff := func(news resource.PropertyMap) *pulumirpc.DiffResponse {
		o, _ := marshal(olds)
		n, _ := marshal(news)
		resp, err := p.Diff(context.Background(), &pulumirpc.DiffRequest{Urn: domainURN, OldInputs: o, Olds: o, News: n})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	news := olds.Copy()
	news["running"], news["autostart"] = resource.NewBoolProperty(true), resource.NewBoolProperty(true)
	news["vcpu"], news["memory"] = resource.NewNumberProperty(2), resource.NewNumberProperty(640)
	if r := diff(news); len(r.Replaces) != 0 || len(r.Diffs) != 4 || r.DeleteBeforeReplace ||
		r.DetailedDiff["running"].Kind != pulumirpc.PropertyDiff_UPDATE ||
		r.DetailedDiff["memory"].Kind != pulumirpc.PropertyDiff_UPDATE {
		t.Errorf("running, autostart, vcpu, memory change in place: %v", r)
	}
	news["kernel"] = resource.NewStringProperty("/k2")
	if r := diff(news); !reflect.DeepEqual(r.Replaces, []string{"kernel"}) || !r.DeleteBeforeReplace ||
		r.DetailedDiff["kernel"].Kind != pulumirpc.PropertyDiff_UPDATE_REPLACE {
		t.Errorf("kernel replaces: %v", r)
	}
}

func TestOverlay(t *testing.T) {
	stored := resource.NewPropertyMapFromMap(map[string]any{"running": true, "hostnameOnly": "x",
		"nics": []any{map[string]any{"mac": "52:54:00:AA:BB:CC", "hostname": "web01"}}})
	seen := resource.NewPropertyMapFromMap(map[string]any{"running": false, "extra": 1,
		"nics": []any{map[string]any{"mac": "52:54:00:aa:bb:cc", "networkName": "n"}}})
	got := overlay(stored, seen)
	want := resource.NewPropertyMapFromMap(map[string]any{"running": false, "hostnameOnly": "x",
		"nics": []any{map[string]any{"mac": "52:54:00:AA:BB:CC", "hostname": "web01"}}})
	if !got.DeepEquals(want) {
		t.Errorf("overlay = %v, want %v", got, want)
	}
}

func TestFill(t *testing.T) {
	stored := resource.NewPropertyValue(map[string]any{"format": "qcow2",
		"nics": []any{map[string]any{"hostname": "web01"}}})
	seen := resource.NewPropertyValue(map[string]any{"format": "raw", "size": 7,
		"nics": []any{map[string]any{"mac": "52:54:00:aa:bb:cc"}}})
	want := resource.NewPropertyValue(map[string]any{"format": "qcow2", "size": 7,
		"nics": []any{map[string]any{"hostname": "web01", "mac": "52:54:00:aa:bb:cc"}}})
	if got := fill(stored, seen); !got.DeepEquals(want) {
		t.Errorf("fill = %v, want %v", got, want)
	}
}

const volumeURN = "urn:pulumi:dev::hacluster::libvirt:index/volume:Volume::web01-disk"

// TestDiffVolumeSizeInPlace: a new size (or a first one) updates the volume in place, never replaces it
// (a replaced disk would lose the node's data); any other change still replaces it.
func TestDiffVolumeSizeInPlace(t *testing.T) {
	p := newProvider(nil)
	olds := resource.PropertyMap{"name": resource.NewStringProperty("t-web01.qcow2"), "pool": resource.NewStringProperty("p"),
		"baseVolumeId": resource.NewStringProperty("/p/base"), "format": resource.NewStringProperty("qcow2")}
	diff := func(olds, news resource.PropertyMap) *pulumirpc.DiffResponse {
		o, _ := marshal(olds)
		n, _ := marshal(news)
		resp, err := p.Diff(context.Background(), &pulumirpc.DiffRequest{Urn: volumeURN, OldInputs: o, Olds: o, News: n})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	sized := olds.Copy()
	sized["size"] = resource.NewNumberProperty(8 << 30)
	if r := diff(olds, sized); len(r.Replaces) != 0 || r.DetailedDiff["size"].Kind != pulumirpc.PropertyDiff_ADD {
		t.Errorf("a first size is added in place: %v", r)
	}
	bigger := sized.Copy()
	bigger["size"] = resource.NewNumberProperty(16 << 30)
	if r := diff(sized, bigger); len(r.Replaces) != 0 || !reflect.DeepEqual(r.Diffs, []string{"size"}) ||
		r.DetailedDiff["size"].Kind != pulumirpc.PropertyDiff_UPDATE {
		t.Errorf("a bigger size is an update in place: %v", r)
	}
	rebased := bigger.Copy()
	rebased["baseVolumeId"] = resource.NewStringProperty("/p/base2")
	if r := diff(sized, rebased); !reflect.DeepEqual(r.Replaces, []string{"baseVolumeId"}) ||
		r.DetailedDiff["size"].Kind != pulumirpc.PropertyDiff_UPDATE {
		t.Errorf("a new base still replaces (the size comes with the new volume): %v", r)
	}
}
