package drill_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cellkit/cellkit/chaos/drill"
)

// TestValidGolden parses every testdata/valid/*.yaml and compares the
// result (step labels, then the scenario with its defaults as JSON) with
// <name>.golden. Each one must also re-validate unchanged and survive a
// trip through JSON.
func TestValidGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/valid/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no valid scenarios: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			s, err := drill.Load(f)
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			b.WriteString("# steps\n")
			for i, st := range s.Steps {
				fmt.Fprintf(&b, "%2d %s: %s\n", i+1, st.Kind(), st.Label())
			}
			j, err := json.MarshalIndent(s, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			b.WriteString("# scenario\n")
			b.Write(j)
			b.WriteString("\n")
			golden(t, strings.TrimSuffix(f, ".yaml")+".golden", []byte(b.String()))
			checkStable(t, s)
		})
	}
}

// checkStable checks that s, which Parse accepted, re-validates unchanged
// and round-trips through json.Marshal and Parse to an equal Scenario.
func checkStable(t *testing.T, s *drill.Scenario) {
	t.Helper()
	before, err := json.Marshal(s)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	if err := s.Validate(); err != nil {
		t.Fatalf("an accepted scenario does not re-validate: %v", err)
	}
	after, _ := json.Marshal(s)
	if string(before) != string(after) {
		t.Fatalf("Validate changed an accepted scenario:\nbefore %s\nafter  %s", before, after)
	}
	again, err := drill.Parse("round-trip", before)
	if err != nil {
		t.Fatalf("the JSON of an accepted scenario does not parse: %v\n%s", err, before)
	}
	if !reflect.DeepEqual(s, again) {
		a, _ := json.Marshal(again)
		t.Fatalf("round trip changed the scenario:\nbefore %s\nafter  %s", before, a)
	}
}

// invalidCase is one document of testdata/invalid.yaml.
type invalidCase struct {
	name string
	yaml string
}

func invalidCases(t testing.TB) []invalidCase {
	data, err := os.ReadFile("testdata/invalid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var out []invalidCase
	seen := map[string]bool{}
	for _, doc := range strings.Split(string(data), "\n---\n") {
		first, _, _ := strings.Cut(doc, "\n")
		name, ok := strings.CutPrefix(first, "# case: ")
		if !ok {
			continue // the file's header
		}
		if seen[name] {
			t.Fatalf("invalid.yaml: case %q twice", name)
		}
		seen[name] = true
		out = append(out, invalidCase{name: name, yaml: doc})
	}
	return out
}

// TestInvalidGolden parses every case of testdata/invalid.yaml and
// compares the errors with testdata/invalid.golden. Every one must be a
// *ScenarioError wrapping ErrBadScenario and naming the case as its file.
func TestInvalidGolden(t *testing.T) {
	var b strings.Builder
	for _, c := range invalidCases(t) {
		s, err := drill.Parse(c.name, []byte(c.yaml))
		if err == nil {
			j, _ := json.Marshal(s)
			t.Errorf("%s: accepted: %s", c.name, j)
			continue
		}
		var se *drill.ScenarioError
		if !errors.As(err, &se) || !errors.Is(err, drill.ErrBadScenario) {
			t.Errorf("%s: %T %v is not a *ScenarioError wrapping ErrBadScenario", c.name, err, err)
		} else if se.File != c.name {
			t.Errorf("%s: File %q", c.name, se.File)
		}
		b.WriteString(err.Error())
		b.WriteString("\n")
	}
	golden(t, "testdata/invalid.golden", []byte(b.String()))
}
