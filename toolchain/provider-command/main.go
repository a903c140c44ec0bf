// Command pulumi-resource-command is this project's own, minimal implementation of the Pulumi
// `command` resource provider plugin, version-compatible with the PyPI SDK pulumi_command==1.2.1.
//
// Why it exists: the upstream provider's Go module (github.com/pulumi/pulumi-command/provider) and
// the framework it is built on (pulumi-go-provider) are refused by the Go module proxy reachable
// here (HTTP 403), and no binary can be downloaded. This is a clean-room implementation written
// against the public gRPC contract in github.com/pulumi/pulumi/sdk/v3 (pulumirpc.ResourceProvider)
// and the documented behaviour of `command:local:Command`; no upstream provider code is used.
//
// Implemented: command:local:Command (Check, Diff, Create, Read, Update, Delete), Handshake,
// Configure, CheckConfig, DiffConfig, GetPluginInfo, GetSchema (minimal), Cancel.
// Not implemented (clear errors): command:remote:* resources, the command:local:run and
// command:remote:* functions, assetPaths/archivePaths (the assets/archive outputs).
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/provider"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

// version is what GetPluginInfo reports: the version of the PyPI SDK (pulumi_command) this serves.
var version = "1.2.1"

const providerName = "command"

func main() {
	err := provider.Main(providerName, func(host *provider.HostClient) (pulumirpc.ResourceProviderServer, error) {
		return newProvider(host), nil
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// logger sends a line of a command's output to the engine, shown under the resource's URN.
type logger func(urn, line string)

type commandProvider struct {
	pulumirpc.UnimplementedResourceProviderServer
	log     logger
	runner  *runner
	environ func() []string

	mu         sync.Mutex
	programDir string // from Handshake; informational
}

func newProvider(host *provider.HostClient) *commandProvider {
	p := &commandProvider{runner: newRunner(), environ: os.Environ}
	p.log = func(urn, line string) {
		if host == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = host.Log(ctx, diag.Info, resource.URN(urn), line)
	}
	return p
}

func notImplemented(what string) error {
	return status.Errorf(codes.Unimplemented,
		"%s is not implemented by hacluster's command provider (toolchain/provider-command implements only %s)",
		what, localCommandType)
}

func checkType(urn, typ string) error {
	if typ == "" && urn != "" {
		typ = string(resource.URN(urn).Type())
	}
	if typ != localCommandType {
		return notImplemented("resource type " + typ)
	}
	return nil
}

var unmarshalOpts = plugin.MarshalOptions{KeepUnknowns: true, KeepSecrets: true, KeepResources: true}
var marshalOpts = plugin.MarshalOptions{KeepUnknowns: true, KeepSecrets: true, KeepResources: true}

func unmarshal(s *structpb.Struct, label string) (resource.PropertyMap, error) {
	o := unmarshalOpts
	o.Label = label
	m, err := plugin.UnmarshalProperties(s, o)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", label, err)
	}
	return m, nil
}

func marshal(m resource.PropertyMap, label string) (*structpb.Struct, error) {
	o := marshalOpts
	o.Label = label
	return plugin.MarshalProperties(m, o)
}

// --- plugin-level methods -------------------------------------------------------------------------

func (p *commandProvider) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version}, nil
}

func (p *commandProvider) Handshake(
	_ context.Context, req *pulumirpc.ProviderHandshakeRequest,
) (*pulumirpc.ProviderHandshakeResponse, error) {
	p.mu.Lock()
	p.programDir = req.GetProgramDirectory()
	p.mu.Unlock()
	return &pulumirpc.ProviderHandshakeResponse{AcceptSecrets: true, AcceptResources: true}, nil
}

func (p *commandProvider) GetSchema(context.Context, *pulumirpc.GetSchemaRequest) (*pulumirpc.GetSchemaResponse, error) {
	schema, err := json.Marshal(map[string]any{
		"name":        providerName,
		"version":     version,
		"description": "hacluster's own minimal command provider (command:local:Command only)",
	})
	if err != nil {
		return nil, err
	}
	return &pulumirpc.GetSchemaResponse{Schema: string(schema)}, nil
}

func (p *commandProvider) CheckConfig(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	return &pulumirpc.CheckResponse{Inputs: req.GetNews()}, nil
}

func (p *commandProvider) DiffConfig(context.Context, *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	return &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_NONE}, nil
}

func (p *commandProvider) Configure(context.Context, *pulumirpc.ConfigureRequest) (*pulumirpc.ConfigureResponse, error) {
	return &pulumirpc.ConfigureResponse{AcceptSecrets: true, AcceptResources: true, SupportsPreview: true}, nil
}

func (p *commandProvider) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	p.runner.cancelAll()
	return &emptypb.Empty{}, nil
}

func (p *commandProvider) Invoke(_ context.Context, req *pulumirpc.InvokeRequest) (*pulumirpc.InvokeResponse, error) {
	return nil, notImplemented("function " + req.GetTok())
}

func (p *commandProvider) Call(_ context.Context, req *pulumirpc.CallRequest) (*pulumirpc.CallResponse, error) {
	return nil, notImplemented("method " + req.GetTok())
}

func (p *commandProvider) Construct(
	_ context.Context, req *pulumirpc.ConstructRequest,
) (*pulumirpc.ConstructResponse, error) {
	return nil, notImplemented("component " + req.GetType())
}

// --- command:local:Command ------------------------------------------------------------------------

func (p *commandProvider) Check(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	if err := checkType(req.GetUrn(), req.GetType()); err != nil {
		return nil, err
	}
	news, err := unmarshal(req.GetNews(), "check.news")
	if err != nil {
		return nil, err
	}
	inputs, failures := checkInputs(news)
	out, err := marshal(inputs, "check.inputs")
	if err != nil {
		return nil, err
	}
	return &pulumirpc.CheckResponse{Inputs: out, Failures: failures}, nil
}

func (p *commandProvider) Diff(_ context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	if err := checkType(req.GetUrn(), req.GetType()); err != nil {
		return nil, err
	}
	var olds resource.PropertyMap
	var err error
	if req.GetOldInputs() != nil {
		olds, err = unmarshal(req.GetOldInputs(), "diff.oldInputs")
	} else {
		olds, err = unmarshal(req.GetOlds(), "diff.olds")
		olds = inputsOf(olds)
	}
	if err != nil {
		return nil, err
	}
	news, err := unmarshal(req.GetNews(), "diff.news")
	if err != nil {
		return nil, err
	}
	return diffResponse(diffInputs(olds, news)), nil
}

func (p *commandProvider) Create(ctx context.Context, req *pulumirpc.CreateRequest) (*pulumirpc.CreateResponse, error) {
	if err := checkType(req.GetUrn(), req.GetType()); err != nil {
		return nil, err
	}
	inputs, err := unmarshal(req.GetProperties(), "create.properties")
	if err != nil {
		return nil, err
	}
	outs, err := p.apply(ctx, req.GetUrn(), keyCreate, inputs, nil, req.GetTimeout(), req.GetPreview())
	if err != nil {
		return nil, err
	}
	id := ""
	if !req.GetPreview() {
		id = newID()
	}
	return &pulumirpc.CreateResponse{Id: id, Properties: outs}, nil
}

func (p *commandProvider) Update(ctx context.Context, req *pulumirpc.UpdateRequest) (*pulumirpc.UpdateResponse, error) {
	if err := checkType(req.GetUrn(), req.GetType()); err != nil {
		return nil, err
	}
	olds, err := unmarshal(req.GetOlds(), "update.olds")
	if err != nil {
		return nil, err
	}
	news, err := unmarshal(req.GetNews(), "update.news")
	if err != nil {
		return nil, err
	}
	outs, err := p.apply(ctx, req.GetUrn(), keyUpdate, news, previousOutputOf(olds), req.GetTimeout(), req.GetPreview())
	if err != nil {
		return nil, err
	}
	return &pulumirpc.UpdateResponse{Properties: outs}, nil
}

func (p *commandProvider) Delete(ctx context.Context, req *pulumirpc.DeleteRequest) (*emptypb.Empty, error) {
	if err := checkType(req.GetUrn(), req.GetType()); err != nil {
		return nil, err
	}
	state, err := unmarshal(req.GetProperties(), "delete.properties")
	if err != nil {
		return nil, err
	}
	s, d := decodeSpec(inputsOf(state))
	if len(d.failures) > 0 {
		return nil, fmt.Errorf("delete: invalid state: %s", d.failures[0].Reason)
	}
	if s.Delete == "" {
		return &emptypb.Empty{}, nil
	}
	var prev *previousOutput
	if s.AddPreviousOutputInEnv {
		prev = previousOutputOf(state)
	}
	ctx, cancel := withTimeout(ctx, req.GetTimeout())
	defer cancel()
	_, err = p.runner.run(ctx, p.job(req.GetUrn(), keyDelete, s.Delete, s, prev))
	if err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

func (p *commandProvider) Read(_ context.Context, req *pulumirpc.ReadRequest) (*pulumirpc.ReadResponse, error) {
	if err := checkType(req.GetUrn(), req.GetType()); err != nil {
		return nil, err
	}
	return &pulumirpc.ReadResponse{Id: req.GetId(), Properties: req.GetProperties(), Inputs: req.GetInputs()}, nil
}

// apply runs the create (op "create") or update (op "update": `update`, else `create`) command and
// returns the outputs: the inputs exactly as given, plus stdout and stderr. During preview nothing
// runs and stdout/stderr are unknown. If any input is secret, stdout and stderr are secret too.
func (p *commandProvider) apply(
	ctx context.Context, urn, op string, inputs resource.PropertyMap, prev *previousOutput, timeout float64, preview bool,
) (*structpb.Struct, error) {
	s, d := decodeSpec(inputs)
	if len(d.failures) > 0 {
		var reasons []string
		for _, f := range d.failures {
			reasons = append(reasons, f.Reason)
		}
		return nil, fmt.Errorf("invalid inputs: %s", strings.Join(reasons, "; "))
	}
	outs := inputs.Copy()
	for k := range outs {
		if outputOnlyKeys[string(k)] {
			delete(outs, k)
		}
	}
	if preview {
		outs[keyStdout] = resource.MakeComputed(resource.NewStringProperty(""))
		outs[keyStderr] = resource.MakeComputed(resource.NewStringProperty(""))
		return marshal(outs, op+".preview")
	}
	if d.unknown {
		return nil, fmt.Errorf("%s: some inputs are still unknown outside of preview", op)
	}

	command, field := s.Create, keyCreate
	if op == keyUpdate && s.Update != "" {
		command, field = s.Update, keyUpdate
	}
	var res result
	if command != "" {
		if !s.AddPreviousOutputInEnv {
			prev = nil
		}
		ctx, cancel := withTimeout(ctx, timeout)
		defer cancel()
		var err error
		res, err = p.runner.run(ctx, p.job(urn, field, command, s, prev))
		if err != nil {
			return nil, err
		}
	}
	stdout, stderr := resource.NewStringProperty(res.Stdout), resource.NewStringProperty(res.Stderr)
	if s.AnySecret {
		stdout, stderr = resource.MakeSecret(stdout), resource.MakeSecret(stderr)
	}
	outs[keyStdout], outs[keyStderr] = stdout, stderr
	return marshal(outs, op+".outputs")
}

func (p *commandProvider) job(urn, field, command string, s spec, prev *previousOutput) job {
	return job{
		Field:   field,
		Command: command,
		Spec:    s,
		Env:     buildEnv(p.environ(), s.Environment, prev),
		Log:     func(_, line string) { p.log(urn, line) },
	}
}

func withTimeout(ctx context.Context, seconds float64) (context.Context, context.CancelFunc) {
	if seconds > 0 {
		return context.WithTimeout(ctx, time.Duration(seconds*float64(time.Second)))
	}
	return context.WithCancel(ctx)
}

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
