package drill_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cellkit/cellkit/chaos/drill"
)

// FuzzParse: Parse never panics; it refuses with a *ScenarioError
// wrapping ErrBadScenario; and anything it accepts re-validates unchanged
// and round-trips through json.Marshal and Parse to an equal Scenario.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/valid/*.yaml")
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, c := range invalidCases(f) {
		f.Add([]byte(c.yaml))
	}
	f.Add([]byte(scenario("", "wait: 3s", "heal: all")))
	f.Add([]byte("name: a\ndescription: \"\\u0085 \\t\"\nsteps: [{wait: 1s}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := drill.Parse("fuzz.yaml", data)
		if err != nil {
			var se *drill.ScenarioError
			if !errors.As(err, &se) || !errors.Is(err, drill.ErrBadScenario) {
				t.Fatalf("%T %v is not a *ScenarioError wrapping ErrBadScenario", err, err)
			}
			if se.Step < -1 || se.Msg == "" {
				t.Fatalf("malformed error %#v", se)
			}
			return
		}
		for _, st := range s.Steps {
			if st.Kind() == "" || st.Label() == "" {
				t.Fatalf("accepted a step without a kind or label: %+v", st)
			}
		}
		checkStable(t, s)
	})
}
