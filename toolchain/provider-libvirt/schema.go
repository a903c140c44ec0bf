package main

import (
	"reflect"
	"strings"
	"unicode"
)

// packageSchema is the Pulumi package schema of what this provider implements, derived from the
// args structs of args.go (their json names and Go types), so it cannot drift from what Check
// accepts. Object types are named as in the pulumi_libvirt SDK: resource + field name, singular
// for lists (Domain.disks -> DomainDisk). Outputs are the inputs (every input is echoed back).
// TestSchemaMatchesSDK compares it with the PyPI SDK.
func packageSchema() map[string]any {
	types := map[string]any{}
	resources := map[string]any{}
	for token, k := range kinds {
		res := token[strings.LastIndex(token, ":")+1:]
		props := objectProps(reflect.TypeOf(k.newArgs()).Elem(), res, types)
		resources[token] = map[string]any{"inputProperties": props, "properties": props,
			"requiredInputs": k.required}
	}
	uri := map[string]any{"uri": map[string]any{"type": "string"}}
	return map[string]any{"name": "libvirt", "version": version,
		"description": "hacluster's own subset of pulumi-libvirt 0.5.4 (go-libvirt)",
		"config":      map[string]any{"variables": uri}, "provider": map[string]any{"inputProperties": uri},
		"resources": resources, "types": types}
}

func objectProps(t reflect.Type, owner string, types map[string]any) map[string]any {
	props := map[string]any{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := strings.Split(f.Tag.Get("json"), ",")[0]
		props[name] = typeSpec(f.Type, owner, name, types)
	}
	return props
}

// typeSpec is the schema of one Go field type; owner+name name its object type, if any.
func typeSpec(t reflect.Type, owner, name string, types map[string]any) map[string]any {
	switch t.Kind() {
	case reflect.Pointer:
		return typeSpec(t.Elem(), owner, name, types)
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int64:
		return map[string]any{"type": "integer"}
	case reflect.Slice:
		return map[string]any{"type": "array", "items": typeSpec(t.Elem(), owner, strings.TrimSuffix(name, "s"), types)}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": typeSpec(t.Elem(), owner, name, types)}
	case reflect.Struct:
		r := []rune(name)
		r[0] = unicode.ToUpper(r[0])
		typ := owner + string(r)
		token := "libvirt:index/" + typ + ":" + typ
		types[token] = map[string]any{"type": "object", "properties": objectProps(t, owner, types)}
		return map[string]any{"$ref": "#/types/" + token}
	}
	panic("schema: unsupported Go type " + t.String())
}
