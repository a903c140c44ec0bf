package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/protobuf/types/known/structpb"
)

// Every (un)marshal keeps unknowns (preview) and secrets (user-data stays secret end to end).
var marshalOpts = plugin.MarshalOptions{KeepUnknowns: true, KeepSecrets: true, SkipNulls: false}

func unmarshal(s *structpb.Struct) (resource.PropertyMap, error) {
	if s == nil {
		return resource.PropertyMap{}, nil
	}
	return plugin.UnmarshalProperties(s, marshalOpts)
}

// unmarshalAll unmarshals the property structs of one request.
func unmarshalAll(structs ...*structpb.Struct) ([]resource.PropertyMap, error) {
	out := make([]resource.PropertyMap, len(structs))
	for i, s := range structs {
		var err error
		if out[i], err = unmarshal(s); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func marshal(m resource.PropertyMap) (*structpb.Struct, error) {
	return plugin.MarshalProperties(m, marshalOpts)
}

// plainValue turns a PropertyValue into plain Go data (for JSON decoding into the args structs):
// secrets are unwrapped, unknowns become nil, and null object fields are dropped.
func plainValue(v resource.PropertyValue) any {
	switch {
	case v.IsSecret():
		return plainValue(v.SecretValue().Element)
	case v.IsComputed():
		return nil
	case v.IsOutput():
		if !v.OutputValue().Known {
			return nil
		}
		return plainValue(v.OutputValue().Element)
	case v.IsArray():
		out := make([]any, 0, len(v.ArrayValue()))
		for _, e := range v.ArrayValue() {
			out = append(out, plainValue(e))
		}
		return out
	case v.IsObject():
		return plainMap(v.ObjectValue())
	case v.IsNull():
		return nil
	case v.IsResourceReference():
		if id, ok := v.ResourceReferenceValue().IDString(); ok {
			return id
		}
		return nil
	}
	return v.Mappable()
}

func plainMap(m resource.PropertyMap) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		if v.IsNull() || strings.HasPrefix(string(k), "__") {
			continue
		}
		out[string(k)] = plainValue(v)
	}
	return out
}

// stripSecrets removes secret wrappers (deeply), for comparisons.
func stripSecrets(v resource.PropertyValue) resource.PropertyValue {
	switch {
	case v.IsSecret():
		return stripSecrets(v.SecretValue().Element)
	case v.IsArray():
		out := make([]resource.PropertyValue, len(v.ArrayValue()))
		for i, e := range v.ArrayValue() {
			out[i] = stripSecrets(e)
		}
		return resource.NewArrayProperty(out)
	case v.IsObject():
		out := resource.PropertyMap{}
		for k, e := range v.ObjectValue() {
			out[k] = stripSecrets(e)
		}
		return resource.NewObjectProperty(out)
	}
	return v
}

var (
	reUnknownField = regexp.MustCompile(`json: unknown field "([^"]+)"`)
	reTypeField    = regexp.MustCompile(`Go struct field [A-Za-z]+\.(\S+) of type (\S+)`)
)

// decodeArgs decodes a PropertyMap into one of the args structs of args.go. An input this provider
// does not implement (or one of the wrong type) comes back as a CheckFailure.
func decodeArgs(m resource.PropertyMap, out any) *pulumirpc.CheckFailure {
	raw, err := json.Marshal(plainMap(m))
	if err != nil {
		return &pulumirpc.CheckFailure{Reason: err.Error()}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		msg := err.Error()
		if g := reUnknownField.FindStringSubmatch(msg); g != nil {
			return &pulumirpc.CheckFailure{Property: g[1], Reason: fmt.Sprintf(
				"%q is not supported by this pulumi-resource-libvirt (the hacluster project's own "+
					"implementation of a subset of pulumi-libvirt 0.5.4; see toolchain/provider-libvirt)", g[1])}
		}
		if g := reTypeField.FindStringSubmatch(msg); g != nil {
			return &pulumirpc.CheckFailure{Property: g[1], Reason: fmt.Sprintf("%s: expected %s", g[1], g[2])}
		}
		return &pulumirpc.CheckFailure{Reason: msg}
	}
	return nil
}

// changedKeys lists the top-level inputs whose values differ between olds and news (an unknown new
// value counts as a change); secrets compare by their plain values.
func changedKeys(olds, news resource.PropertyMap, ignore []string) []string {
	skip := map[string]bool{}
	for _, k := range ignore {
		skip[k] = true
	}
	keys := map[resource.PropertyKey]bool{}
	for k := range olds {
		keys[k] = true
	}
	for k := range news {
		keys[k] = true
	}
	var changed []string
	for k := range keys {
		if skip[string(k)] || strings.HasPrefix(string(k), "__") {
			continue
		}
		o, n := olds[k], news[k]
		if n.ContainsUnknowns() {
			changed = append(changed, string(k))
			continue
		}
		if o.IsNull() && n.IsNull() {
			continue
		}
		if !stripSecrets(o).DeepEquals(stripSecrets(n)) {
			changed = append(changed, string(k))
		}
	}
	sort.Strings(changed)
	return changed
}

// overlay writes what libvirt reports (seen) over stored properties (a refresh): only the keys the
// stored ones hold, so it shows drift in what the program sets and never adds what it leaves unset.
func overlay(stored, seen resource.PropertyMap) resource.PropertyMap {
	return merge(resource.NewObjectProperty(stored), resource.NewObjectProperty(seen), true).ObjectValue()
}

// fill completes a stored value with what libvirt reports and it lacks (Create's outputs, such as
// the MACs libvirt chose); stored values win.
func fill(stored, seen resource.PropertyValue) resource.PropertyValue {
	return merge(stored, seen, false)
}

// merge: objects key by key, lists of the same length element by element (a list whose length
// changed is libvirt's); for scalars seen wins on a refresh, stored otherwise. Strings that differ
// only in case (MAC addresses: libvirt lower-cases them) keep the stored form.
func merge(stored, seen resource.PropertyValue, refresh bool) resource.PropertyValue {
	switch {
	case stored.IsNull():
		return seen
	case stored.IsSecret():
		return resource.MakeSecret(merge(stored.SecretValue().Element, seen, refresh))
	case stored.IsObject() && seen.IsObject():
		out := stored.ObjectValue().Copy()
		for k, v := range seen.ObjectValue() {
			if _, ok := out[k]; ok || !refresh {
				out[k] = merge(out[k], v, refresh)
			}
		}
		return resource.NewObjectProperty(out)
	case stored.IsArray() && seen.IsArray() && len(stored.ArrayValue()) == len(seen.ArrayValue()):
		out := make([]resource.PropertyValue, len(seen.ArrayValue()))
		for i, s := range stored.ArrayValue() {
			out[i] = merge(s, seen.ArrayValue()[i], refresh)
		}
		return resource.NewArrayProperty(out)
	case !refresh, stored.IsString() && seen.IsString() && strings.EqualFold(stored.StringValue(), seen.StringValue()):
		return stored
	}
	return seen
}
