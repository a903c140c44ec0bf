package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

func str(s string) resource.PropertyValue                    { return resource.NewStringProperty(s) }
func secret(v resource.PropertyValue) resource.PropertyValue { return resource.MakeSecret(v) }
func unknown() resource.PropertyValue {
	return resource.MakeComputed(resource.NewStringProperty(""))
}
func list(vs ...resource.PropertyValue) resource.PropertyValue { return resource.NewArrayProperty(vs) }

func base() resource.PropertyMap {
	return resource.PropertyMap{
		"create":      str("echo hi"),
		"environment": resource.NewObjectProperty(resource.PropertyMap{"A": str("1"), "B": secret(str("pw"))}),
		"triggers":    list(str("t1"), resource.NewNumberProperty(2)),
	}
}

func diffKeys(t *testing.T, olds, news resource.PropertyMap) (changed, replaced []string) {
	t.Helper()
	for _, d := range diffInputs(olds, news) {
		changed = append(changed, d.Key)
		if d.Replace {
			replaced = append(replaced, d.Key)
		}
	}
	return changed, replaced
}

func TestDiff(t *testing.T) {
	cases := []struct {
		name              string
		edit              func(resource.PropertyMap)
		changed, replaced []string
	}{
		{"same", func(resource.PropertyMap) {}, nil, nil},
		{"create changed -> update", func(m resource.PropertyMap) { m["create"] = str("echo ho") }, []string{"create"}, nil},
		{"delete added -> update", func(m resource.PropertyMap) { m["delete"] = str("rm x") }, []string{"delete"}, nil},
		{"null is absent", func(m resource.PropertyMap) { m["dir"] = resource.NewNullProperty() }, nil, nil},
		{"environment value -> update", func(m resource.PropertyMap) {
			m["environment"] = resource.NewObjectProperty(resource.PropertyMap{"A": str("1"), "B": secret(str("pw2"))})
		}, []string{"environment"}, nil},
		{"triggers changed -> replace", func(m resource.PropertyMap) { m["triggers"] = list(str("t1")) },
			[]string{"triggers"}, []string{"triggers"}},
		{"triggers removed -> replace", func(m resource.PropertyMap) { delete(m, "triggers") },
			[]string{"triggers"}, []string{"triggers"}},
		{"unknown create -> update", func(m resource.PropertyMap) { m["create"] = unknown() }, []string{"create"}, nil},
		{"unknown trigger element -> replace", func(m resource.PropertyMap) { m["triggers"] = list(str("t1"), unknown()) },
			[]string{"triggers"}, []string{"triggers"}},
		{"two changes", func(m resource.PropertyMap) { m["logging"] = str("none"); m["triggers"] = list() },
			[]string{"logging", "triggers"}, []string{"triggers"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			news := base()
			c.edit(news)
			changed, replaced := diffKeys(t, base(), news)
			if !reflect.DeepEqual(changed, c.changed) || !reflect.DeepEqual(replaced, c.replaced) {
				t.Fatalf("changed=%v replaced=%v, want %v %v", changed, replaced, c.changed, c.replaced)
			}
		})
	}
}

func TestDiffResponse(t *testing.T) {
	none := diffResponse(nil)
	if none.Changes != pulumirpc.DiffResponse_DIFF_NONE {
		t.Fatalf("no diffs: %v", none.Changes)
	}
	news := base()
	news["triggers"] = list(str("x"))
	news["create"] = str("true")
	r := diffResponse(diffInputs(base(), news))
	if r.Changes != pulumirpc.DiffResponse_DIFF_SOME || r.DeleteBeforeReplace {
		t.Fatalf("changes=%v dbr=%v", r.Changes, r.DeleteBeforeReplace)
	}
	if !reflect.DeepEqual(r.Replaces, []string{"triggers"}) || !reflect.DeepEqual(r.Diffs, []string{"create", "triggers"}) {
		t.Fatalf("replaces=%v diffs=%v", r.Replaces, r.Diffs)
	}
	if r.DetailedDiff["triggers"].Kind != pulumirpc.PropertyDiff_UPDATE_REPLACE ||
		r.DetailedDiff["create"].Kind != pulumirpc.PropertyDiff_UPDATE || !r.DetailedDiff["create"].InputDiff {
		t.Fatalf("detailed: %v", r.DetailedDiff)
	}
}

func TestInputsOfDropsOutputs(t *testing.T) {
	state := base()
	state["stdout"] = str("hi")
	state["stderr"] = str("")
	if got := inputsOf(state); !got.DeepEquals(base()) {
		t.Fatalf("inputsOf: %v", got)
	}
	if d := diffInputs(inputsOf(state), base()); len(d) != 0 {
		t.Fatalf("state vs same inputs: %v", d)
	}
}

func TestBuildEnv(t *testing.T) {
	baseEnv := []string{"PATH=/bin", "A=old", "HOME=/root", "PULUMI_COMMAND_STDOUT=stale"}
	got := buildEnv(baseEnv, map[string]string{"A": "new", "Z": "z"}, nil)
	want := []string{"PATH=/bin", "HOME=/root", "PULUMI_COMMAND_STDOUT=stale", "A=new", "Z=z"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("no prev: %v, want %v", got, want)
	}
	got = buildEnv(baseEnv, map[string]string{"A": "new"}, &previousOutput{Stdout: "out\nx", Stderr: ""})
	want = []string{"PATH=/bin", "HOME=/root", "A=new", "PULUMI_COMMAND_STDERR=", "PULUMI_COMMAND_STDOUT=out\nx"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("prev: %v, want %v", got, want)
	}
}

func TestPreviousOutputOf(t *testing.T) {
	p := previousOutputOf(resource.PropertyMap{"stdout": secret(str("s3cret")), "stderr": str("warn")})
	if p.Stdout != "s3cret" || p.Stderr != "warn" {
		t.Fatalf("%+v", p)
	}
	p = previousOutputOf(resource.PropertyMap{})
	if p.Stdout != "" || p.Stderr != "" {
		t.Fatalf("%+v", p)
	}
}

func TestDecodeDefaultsAndSecrets(t *testing.T) {
	s, d := decodeSpec(base())
	if len(d.failures) != 0 || d.unknown {
		t.Fatalf("failures=%v unknown=%v", d.failures, d.unknown)
	}
	if s.Create != "echo hi" || s.Logging != "stdoutAndStderr" || !s.AddPreviousOutputInEnv ||
		!reflect.DeepEqual(s.Interpreter, []string{"/bin/sh", "-c"}) || s.Stdin != nil {
		t.Fatalf("defaults: %+v", s)
	}
	if !s.AnySecret || !reflect.DeepEqual(s.Secrets, []string{"pw"}) || s.Environment["B"] != "pw" {
		t.Fatalf("secrets: %+v", s)
	}

	whole := resource.PropertyMap{
		"environment":            secret(resource.NewObjectProperty(resource.PropertyMap{"K": str("v1")})),
		"interpreter":            list(str("/bin/bash"), str("-ec")),
		"addPreviousOutputInEnv": resource.NewBoolProperty(false),
		"stdin":                  str("in"),
		"logging":                str("none"),
		"stdout":                 resource.NewNullProperty(),
	}
	s, d = decodeSpec(whole)
	if len(d.failures) != 0 || !s.AnySecret || s.Environment["K"] != "v1" || s.AddPreviousOutputInEnv ||
		s.Interpreter[0] != "/bin/bash" || *s.Stdin != "in" || s.Logging != "none" {
		t.Fatalf("%+v %v", s, d.failures)
	}
	if !reflect.DeepEqual(s.Secrets, []string{"v1"}) {
		t.Fatalf("secrets: %v", s.Secrets)
	}
}

func TestCheckFailures(t *testing.T) {
	bad := resource.PropertyMap{
		"create":      resource.NewNumberProperty(1),
		"environment": resource.NewObjectProperty(resource.PropertyMap{"A": resource.NewBoolProperty(true)}),
		"interpreter": list(),
		"logging":     str("loud"),
		"assetPaths":  list(str("*.txt")),
		"bogus":       str("x"),
		"triggers":    str("notalist"),
	}
	_, failures := checkInputs(bad)
	got := map[string]string{}
	for _, f := range failures {
		got[f.Property] = f.Reason
	}
	for _, key := range []string{"create", "environment", "interpreter", "logging", "assetPaths", "bogus", "triggers"} {
		if got[key] == "" {
			t.Errorf("no failure for %s (got %v)", key, got)
		}
	}
	if !strings.Contains(got["assetPaths"], "not implemented by hacluster's command provider") {
		t.Errorf("assetPaths reason: %q", got["assetPaths"])
	}
}

func TestCheckAcceptsUnknownsAndDropsNullOutputs(t *testing.T) {
	news := resource.PropertyMap{
		"create":       unknown(),
		"environment":  resource.NewObjectProperty(resource.PropertyMap{"A": unknown()}),
		"interpreter":  list(str("/bin/sh"), unknown()),
		"triggers":     unknown(),
		"logging":      unknown(),
		"stdout":       resource.NewNullProperty(),
		"archivePaths": list(),
	}
	out, failures := checkInputs(news)
	if len(failures) != 0 {
		t.Fatalf("failures: %v", failures)
	}
	if _, has := out["stdout"]; has {
		t.Fatal("null stdout placeholder kept")
	}
	if len(out) != len(news)-1 {
		t.Fatalf("inputs changed: %v", out)
	}
}
