package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

// The one resource type this provider implements.
const localCommandType = "command:local:Command"

// Input property names, as the SDKs send them (camelCase).
const (
	keyCreate         = "create"
	keyUpdate         = "update"
	keyDelete         = "delete"
	keyDir            = "dir"
	keyEnvironment    = "environment"
	keyInterpreter    = "interpreter"
	keyStdin          = "stdin"
	keyTriggers       = "triggers"
	keyLogging        = "logging"
	keyAddPrevious    = "addPreviousOutputInEnv"
	keyAssetPaths     = "assetPaths"
	keyArchivePaths   = "archivePaths"
	keyStdout         = "stdout"
	keyStderr         = "stderr"
	envPrevStdout     = "PULUMI_COMMAND_STDOUT"
	envPrevStderr     = "PULUMI_COMMAND_STDERR"
	defaultLogging    = loggingStdoutAndStderr
	secretPlaceholder = "[secret]"
)

// inputKeys are the properties Check accepts and Diff compares.
var inputKeys = []string{
	keyAddPrevious, keyArchivePaths, keyAssetPaths, keyCreate, keyDelete, keyDir, keyEnvironment,
	keyInterpreter, keyLogging, keyStdin, keyTriggers, keyUpdate,
}

// outputOnlyKeys may be sent by an SDK as null placeholders for outputs; Check drops them.
var outputOnlyKeys = map[string]bool{keyStdout: true, keyStderr: true, "assets": true, "archive": true}

var defaultInterpreter = []string{"/bin/sh", "-c"}

// Logging modes (the `logging` input).
const (
	loggingStdout          = "stdout"
	loggingStderr          = "stderr"
	loggingStdoutAndStderr = "stdoutAndStderr"
	loggingNone            = "none"
)

func logsStdout(mode string) bool { return mode == loggingStdout || mode == loggingStdoutAndStderr }
func logsStderr(mode string) bool { return mode == loggingStderr || mode == loggingStdoutAndStderr }

// spec is a command resource's inputs, decoded, with defaults applied and secrets unwrapped.
type spec struct {
	Create, Update, Delete string // "" = not set
	Dir                    string
	Environment            map[string]string
	Interpreter            []string
	Stdin                  *string
	Logging                string
	AddPreviousOutputInEnv bool

	// AnySecret: some input is (or contains) a secret, so stdout/stderr are returned as secrets too.
	AnySecret bool
	// Secrets: the plain-text values of secret inputs, masked in logs and error messages.
	Secrets []string
}

// unwrap strips secret and (known) output wrappers. unknown is true for a computed value.
func unwrap(v resource.PropertyValue) (inner resource.PropertyValue, secret, unknown bool) {
	for {
		switch {
		case v.IsSecret():
			secret = true
			v = v.SecretValue().Element
		case v.IsOutput():
			o := v.OutputValue()
			secret = secret || o.Secret
			if !o.Known {
				return v, secret, true
			}
			v = o.Element
		case v.IsComputed():
			return v, secret, true
		default:
			return v, secret, false
		}
	}
}

// decoder collects validation failures while reading a property map.
type decoder struct {
	props    resource.PropertyMap
	failures []*pulumirpc.CheckFailure
	unknown  bool // some value was unknown (only allowed during preview / Check)
	secrets  []string
}

func (d *decoder) fail(key, format string, args ...any) {
	d.failures = append(d.failures, &pulumirpc.CheckFailure{Property: key, Reason: fmt.Sprintf(format, args...)})
}

// value returns the unwrapped value of key; ok is false when it is absent, null or unknown.
func (d *decoder) value(key string) (v resource.PropertyValue, ok bool) {
	raw, has := d.props[resource.PropertyKey(key)]
	if !has {
		return v, false
	}
	v, secret, unknown := unwrap(raw)
	if unknown {
		d.unknown = true
		return v, false
	}
	if secret {
		collectSecretStrings(v, &d.secrets)
	}
	return v, !v.IsNull()
}

func (d *decoder) str(key string) (string, bool) {
	v, ok := d.value(key)
	if !ok {
		return "", false
	}
	if !v.IsString() {
		d.fail(key, "%s must be a string, got %s", key, v.TypeString())
		return "", false
	}
	return v.StringValue(), true
}

func (d *decoder) strList(key string) ([]string, bool) {
	v, ok := d.value(key)
	if !ok {
		return nil, false
	}
	if !v.IsArray() {
		d.fail(key, "%s must be a list of strings, got %s", key, v.TypeString())
		return nil, false
	}
	out := make([]string, 0, len(v.ArrayValue()))
	complete := true
	for i, e := range v.ArrayValue() {
		e, secret, unknown := unwrap(e)
		switch {
		case unknown:
			d.unknown, complete = true, false
		case !e.IsString():
			d.fail(key, "%s[%d] must be a string, got %s", key, i, e.TypeString())
			complete = false
		default:
			if secret {
				d.secrets = append(d.secrets, e.StringValue())
			}
			out = append(out, e.StringValue())
		}
	}
	return out, complete
}

// collectSecretStrings appends every string inside v (a secret's plain value).
func collectSecretStrings(v resource.PropertyValue, into *[]string) {
	v, _, unknown := unwrap(v)
	switch {
	case unknown:
	case v.IsString():
		*into = append(*into, v.StringValue())
	case v.IsArray():
		for _, e := range v.ArrayValue() {
			collectSecretStrings(e, into)
		}
	case v.IsObject():
		for _, e := range v.ObjectValue() {
			collectSecretStrings(e, into)
		}
	}
}

// decodeSpec validates props and returns the decoded spec. Unknown values are skipped (they are
// fine in Check and during preview); the caller decides whether d.unknown is acceptable.
func decodeSpec(props resource.PropertyMap) (spec, *decoder) {
	d := &decoder{props: props}
	s := spec{Interpreter: defaultInterpreter, Logging: defaultLogging, AddPreviousOutputInEnv: true}

	for k, v := range props {
		key := string(k)
		if strings.HasPrefix(key, "__") || outputOnlyKeys[key] {
			continue
		}
		if !containsString(inputKeys, key) {
			if !v.IsNull() {
				d.fail(key, "unknown property %q for %s", key, localCommandType)
			}
			continue
		}
		if v.ContainsSecrets() {
			s.AnySecret = true
		}
	}

	s.Create, _ = d.str(keyCreate)
	s.Update, _ = d.str(keyUpdate)
	s.Delete, _ = d.str(keyDelete)
	s.Dir, _ = d.str(keyDir)
	if stdin, ok := d.str(keyStdin); ok {
		s.Stdin = &stdin
	}
	if l, ok := d.str(keyLogging); ok {
		switch l {
		case loggingStdout, loggingStderr, loggingStdoutAndStderr, loggingNone:
			s.Logging = l
		default:
			d.fail(keyLogging, "logging must be one of stdout, stderr, stdoutAndStderr, none; got %q", l)
		}
	}
	if v, ok := d.value(keyAddPrevious); ok {
		if v.IsBool() {
			s.AddPreviousOutputInEnv = v.BoolValue()
		} else {
			d.fail(keyAddPrevious, "addPreviousOutputInEnv must be a boolean, got %s", v.TypeString())
		}
	}
	if list, complete := d.strList(keyInterpreter); complete {
		if len(list) == 0 {
			d.fail(keyInterpreter, "interpreter must not be empty (default: [\"/bin/sh\", \"-c\"])")
		} else {
			s.Interpreter = list
		}
	}
	if v, ok := d.value(keyEnvironment); ok {
		if !v.IsObject() {
			d.fail(keyEnvironment, "environment must be a map of strings, got %s", v.TypeString())
		} else {
			s.Environment = map[string]string{}
			for k, e := range v.ObjectValue() {
				e, secret, unknown := unwrap(e)
				switch {
				case unknown:
					d.unknown = true
				case !e.IsString():
					d.fail(keyEnvironment, "environment[%q] must be a string, got %s", string(k), e.TypeString())
				default:
					if secret {
						d.secrets = append(d.secrets, e.StringValue())
					}
					s.Environment[string(k)] = e.StringValue()
				}
			}
		}
	}
	if v, ok := d.value(keyTriggers); ok && !v.IsArray() {
		d.fail(keyTriggers, "triggers must be a list, got %s", v.TypeString())
	}
	// Secrets anywhere in triggers are masked too (they may be interpolated into commands).
	if raw, ok := props[keyTriggers]; ok {
		collectNestedSecrets(raw, &d.secrets)
	}
	for _, key := range []string{keyAssetPaths, keyArchivePaths} {
		if v, ok := d.value(key); ok && !(v.IsArray() && len(v.ArrayValue()) == 0) {
			d.fail(key, "%s is not implemented by hacluster's command provider (toolchain/provider-command); "+
				"leave it unset", key)
		}
	}
	s.Secrets = d.secrets
	return s, d
}

// collectNestedSecrets appends the strings of every secret found anywhere inside v.
func collectNestedSecrets(v resource.PropertyValue, into *[]string) {
	switch {
	case v.IsSecret():
		collectSecretStrings(v.SecretValue().Element, into)
	case v.IsOutput():
		if o := v.OutputValue(); o.Secret {
			collectSecretStrings(o.Element, into)
		} else {
			collectNestedSecrets(o.Element, into)
		}
	case v.IsArray():
		for _, e := range v.ArrayValue() {
			collectNestedSecrets(e, into)
		}
	case v.IsObject():
		for _, e := range v.ObjectValue() {
			collectNestedSecrets(e, into)
		}
	}
}

func containsString(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// checkInputs is Check: the inputs themselves (minus null output placeholders), or failures.
func checkInputs(news resource.PropertyMap) (resource.PropertyMap, []*pulumirpc.CheckFailure) {
	_, d := decodeSpec(news)
	out := resource.PropertyMap{}
	for k, v := range news {
		if outputOnlyKeys[string(k)] && v.IsNull() {
			continue
		}
		out[k] = v
	}
	sort.Slice(d.failures, func(i, j int) bool { return d.failures[i].Property < d.failures[j].Property })
	return out, d.failures
}

// inputsOf returns the input properties of a state (its outputs minus stdout/stderr).
func inputsOf(props resource.PropertyMap) resource.PropertyMap {
	out := resource.PropertyMap{}
	for k, v := range props {
		if !outputOnlyKeys[string(k)] {
			out[k] = v
		}
	}
	return out
}

// propDiff is one changed input.
type propDiff struct {
	Key     string
	Kind    pulumirpc.PropertyDiff_Kind
	Replace bool
}

// diffInputs compares old and new inputs. A changed `triggers` means replace; any other changed
// input means update. Unknown new values count as changed. Absent and null are the same.
func diffInputs(olds, news resource.PropertyMap) []propDiff {
	var diffs []propDiff
	for _, key := range inputKeys {
		o, hasOld := olds[resource.PropertyKey(key)]
		n, hasNew := news[resource.PropertyKey(key)]
		hasOld = hasOld && !o.IsNull()
		hasNew = hasNew && !n.IsNull()
		replace := key == keyTriggers
		var kind pulumirpc.PropertyDiff_Kind
		switch {
		case !hasOld && !hasNew:
			continue
		case !hasOld:
			kind = pulumirpc.PropertyDiff_ADD
		case !hasNew:
			kind = pulumirpc.PropertyDiff_DELETE
		case n.ContainsUnknowns() || !o.DeepEquals(n):
			kind = pulumirpc.PropertyDiff_UPDATE
		default:
			continue
		}
		if replace {
			kind = map[pulumirpc.PropertyDiff_Kind]pulumirpc.PropertyDiff_Kind{
				pulumirpc.PropertyDiff_ADD:    pulumirpc.PropertyDiff_ADD_REPLACE,
				pulumirpc.PropertyDiff_DELETE: pulumirpc.PropertyDiff_DELETE_REPLACE,
				pulumirpc.PropertyDiff_UPDATE: pulumirpc.PropertyDiff_UPDATE_REPLACE,
			}[kind]
		}
		diffs = append(diffs, propDiff{Key: key, Kind: kind, Replace: replace})
	}
	return diffs
}

// diffResponse turns diffInputs' result into the engine's answer.
func diffResponse(diffs []propDiff) *pulumirpc.DiffResponse {
	if len(diffs) == 0 {
		return &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_NONE, HasDetailedDiff: true,
			DetailedDiff: map[string]*pulumirpc.PropertyDiff{}}
	}
	resp := &pulumirpc.DiffResponse{
		Changes:             pulumirpc.DiffResponse_DIFF_SOME,
		HasDetailedDiff:     true,
		DetailedDiff:        map[string]*pulumirpc.PropertyDiff{},
		DeleteBeforeReplace: false,
	}
	for _, d := range diffs {
		resp.Diffs = append(resp.Diffs, d.Key)
		resp.DetailedDiff[d.Key] = &pulumirpc.PropertyDiff{Kind: d.Kind, InputDiff: true}
		if d.Replace {
			resp.Replaces = append(resp.Replaces, d.Key)
		}
	}
	return resp
}

// previousOutput is the stdout/stderr of the last create/update, from a resource's state.
type previousOutput struct{ Stdout, Stderr string }

func previousOutputOf(state resource.PropertyMap) *previousOutput {
	get := func(key string) string {
		v, _, unknown := unwrap(state[resource.PropertyKey(key)])
		if unknown || !v.IsString() {
			return ""
		}
		return v.StringValue()
	}
	return &previousOutput{Stdout: get(keyStdout), Stderr: get(keyStderr)}
}

// buildEnv is the command's environment: base (the provider's own environment), overridden by the
// `environment` input, then PULUMI_COMMAND_STDOUT/STDERR from prev when given.
func buildEnv(base []string, environment map[string]string, prev *previousOutput) []string {
	set := map[string]string{}
	for k, v := range environment {
		set[k] = v
	}
	if prev != nil {
		set[envPrevStdout] = prev.Stdout
		set[envPrevStderr] = prev.Stderr
	}
	env := make([]string, 0, len(base)+len(set))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if _, overridden := set[k]; !overridden {
			env = append(env, kv)
		}
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+set[k])
	}
	return env
}
