package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
)

// flatten turns a schema property into the type strings of testdata/sdk_schema.py.
func flatten(p map[string]any) string {
	if ref, ok := p["$ref"].(string); ok {
		return "ref:" + strings.TrimPrefix(ref, "#/types/")
	}
	switch p["type"] {
	case "array":
		return "array<" + flatten(p["items"].(map[string]any)) + ">"
	case "object":
		return "map<" + flatten(p["additionalProperties"].(map[string]any)) + ">"
	}
	return p["type"].(string)
}

func flattenAll(props any) map[string]string {
	out := map[string]string{}
	for name, p := range props.(map[string]any) {
		out[name] = flatten(p.(map[string]any))
	}
	return out
}

// TestSchemaMatchesSDK: the schema GetSchema serves names and types every property as the PyPI
// SDK pulumi_libvirt 0.5.4 does (inputs and outputs), covers every property the hacluster program
// passes (components/*.py), and declares nothing the SDK does not have.
func TestSchemaMatchesSDK(t *testing.T) {
	py := "../../venv/bin/python"
	if _, err := os.Stat(py); err != nil {
		t.Skip("no project venv (make venv): cannot read the PyPI SDK")
	}
	out, err := exec.Command(py, "testdata/sdk_schema.py", "../..").Output()
	if err != nil {
		t.Fatalf("testdata/sdk_schema.py: %v", err)
	}
	var sdk struct {
		Version   string
		Resources map[string]struct{ Inputs, Outputs map[string]string }
		Types     map[string]map[string]string
		Used      map[string][]string
	}
	if err := json.Unmarshal(out, &sdk); err != nil {
		t.Fatal(err)
	}
	if sdk.Version != version {
		t.Errorf("SDK %s, plugin reports %s", sdk.Version, version)
	}
	resp, err := newProvider(nil).GetSchema(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Version   string
		Provider  struct{ InputProperties any }
		Resources map[string]struct{ InputProperties, Properties any }
		Types     map[string]struct{ Properties any }
	}
	if err := json.Unmarshal([]byte(resp.Schema), &schema); err != nil {
		t.Fatal(err)
	}
	type side struct{ mine, sdk map[string]string }
	sides := map[string][]side{"provider": {{flattenAll(schema.Provider.InputProperties), sdk.Resources["provider"].Inputs}}}
	for tok, r := range schema.Resources {
		sides[tok] = []side{{flattenAll(r.InputProperties), sdk.Resources[tok].Inputs},
			{flattenAll(r.Properties), sdk.Resources[tok].Outputs}}
	}
	for tok, ty := range schema.Types {
		sides[tok] = []side{{flattenAll(ty.Properties), sdk.Types[tok]}}
	}
	for tok, ss := range sides {
		for _, s := range ss {
			if s.sdk == nil {
				t.Errorf("%s: not in the SDK", tok)
			}
			for name, typ := range s.mine {
				if s.sdk[name] != typ {
					t.Errorf("%s.%s: plugin %q, SDK %q", tok, name, typ, s.sdk[name])
				}
			}
		}
	}
	var toks []string
	for tok, names := range sdk.Used {
		toks = append(toks, tok)
		for _, name := range names {
			if sides[tok] == nil || sides[tok][0].mine[name] == "" {
				t.Errorf("the program passes %s.%s: missing from the plugin's schema", tok, name)
			}
		}
	}
	sort.Strings(toks)
	if len(toks) < 11 {
		t.Errorf("the program's use of the SDK was not found (components/*.py): %v", toks)
	}
}
