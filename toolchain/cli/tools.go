//go:build tools

// Package tools pins the Pulumi CLI module so that `go build` of its
// cmd/pulumi package resolves to exactly the versions in go.mod/go.sum.
package tools

import _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
