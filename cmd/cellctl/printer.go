package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"sigs.k8s.io/yaml"
)

// A result is what a command produces: a typed value printed as a table for
// people, or as JSON or YAML (from its json tags) for scripts.
type result interface {
	writeTable(w io.Writer) error
}

// printResult writes r to w in format ("table", "json" or "yaml").
func printResult(w io.Writer, format string, r result) error {
	switch format {
	case "json":
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return fmt.Errorf("encode JSON: %w", err)
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	case "yaml":
		b, err := yaml.Marshal(r)
		if err != nil {
			return fmt.Errorf("encode YAML: %w", err)
		}
		_, err = w.Write(b)
		return err
	}
	tw := newTabWriter(w)
	if err := r.writeTable(tw); err != nil {
		return err
	}
	return tw.Flush()
}

func (a *app) print(r result) error { return printResult(a.stdout, a.output, r) }

// newTabWriter aligns tab-separated columns; a line without tabs (a blank
// line or a heading) ends a block of columns.
func newTabWriter(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// row writes one tab-separated table row.
func row(w io.Writer, cols ...any) {
	for i, c := range cols {
		if i > 0 {
			io.WriteString(w, "\t")
		}
		fmt.Fprint(w, c)
	}
	io.WriteString(w, "\n")
}

// orDash renders an empty cell of a table as "-".
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}

func joinOrDash(ss []string, sep string) string { return orDash(strings.Join(ss, sep)) }
