package drill

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"

	"sigs.k8s.io/yaml"
)

// Decoding is strict: YAML becomes JSON (sigs.k8s.io/yaml, which refuses
// duplicate keys), then a small reflective decoder walks the JSON beside
// the Go types. Doing the walk here rather than with encoding/json's
// DisallowUnknownFields gives every error its place (step index, field
// path), matches keys exactly rather than case-insensitively ("leasettl" is
// an error, not leaseTTL), and lets a string field take a YAML number
// ("stages: 1").

// fieldError is a decoding error at path (dotted JSON path, "" = the value
// itself).
type fieldError struct {
	path      string
	msg       string
	isUnknown bool     // an unknown field: the key is unknown
	unknown   string   // the unknown key
	known     []string // the keys that would have been accepted
}

func decode(name string, data []byte) (*Scenario, error) {
	bad := func(msg string) error { return &ScenarioError{File: name, Step: -1, Msg: msg} }
	if len(data) > MaxScenarioBytes {
		return nil, bad(fmt.Sprintf("the file has %d bytes; a scenario has at most %d", len(data), MaxScenarioBytes))
	}
	if !utf8.Valid(data) {
		return nil, bad("the file is not UTF-8")
	}
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, bad(oneLine(err.Error()))
	}
	j = bytes.TrimSpace(j)
	if string(j) == "null" {
		return nil, bad("the file is empty")
	}
	if j[0] != '{' {
		return nil, bad("want a scenario (an object with name, description, lab, steps, expect), got " + describeJSON(j))
	}
	s := new(Scenario)
	keys, vals, ferr := objectFields(j)
	if ferr != nil {
		return nil, bad(ferr.Error())
	}
	fields, names := jsonFields(reflect.TypeFor[Scenario]())
	v := reflect.ValueOf(s).Elem()
	for i, k := range keys {
		idx, ok := fields[k]
		if !ok {
			fe := &fieldError{path: k, isUnknown: true, unknown: k, known: names}
			return nil, &ScenarioError{File: name, Step: -1, Field: k, Msg: fe.message("", false)}
		}
		if k == "steps" {
			if err := decodeSteps(name, vals[i], s); err != nil {
				return nil, err
			}
			continue
		}
		if fe := decodeValue(vals[i], v.Field(idx), k); fe != nil {
			return nil, &ScenarioError{File: name, Step: -1, Field: fe.path, Msg: fe.message("", false)}
		}
	}
	return s, nil
}

func decodeSteps(name string, raw json.RawMessage, s *Scenario) error {
	if string(raw) == "null" {
		return nil
	}
	var elems []json.RawMessage
	if raw[0] != '[' || json.Unmarshal(raw, &elems) != nil {
		return &ScenarioError{File: name, Step: -1, Field: "steps", Msg: "steps: want a list of steps, got " + describeJSON(raw)}
	}
	s.Steps = make([]Step, len(elems))
	for i, e := range elems {
		kind := ""
		if e[0] == '{' {
			if keys, _, err := objectFields(e); err == nil {
				var found []string
				for _, k := range keys {
					for _, sk := range stepKinds {
						if k == sk {
							found = append(found, k)
						}
					}
				}
				if len(found) == 1 {
					kind = found[0]
				}
			}
		} else {
			return &ScenarioError{File: name, Step: i, Msg: "want a step (an object with one of " + strings.Join(stepKinds, ", ") + "), got " + describeJSON(e)}
		}
		if fe := decodeValue(e, reflect.ValueOf(&s.Steps[i]).Elem(), ""); fe != nil {
			return &ScenarioError{File: name, Step: i, Kind: kind, Field: fe.path, Msg: fe.message(kind, true)}
		}
	}
	return nil
}

// message renders e for a person; in a step of kind kind, paths are given
// relative to the kind's object, which the error's prefix names.
func (e *fieldError) message(kind string, inStep bool) string {
	rel := e.path
	if kind != "" {
		if rel == kind {
			rel = ""
		} else if r, ok := strings.CutPrefix(rel, kind+"."); ok {
			rel = r
		}
	}
	if e.isUnknown {
		msg := fmt.Sprintf("unknown field %q", rel)
		if s := suggest(e.unknown, e.known); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		} else if inStep && !strings.Contains(e.path, ".") {
			// At the step level: say what a step is.
			msg += " (a step has one of " + strings.Join(stepKinds, ", ") + ", and optionally a name)"
		}
		return msg
	}
	if rel == "" {
		return e.msg
	}
	return rel + ": " + e.msg
}

var durationType = reflect.TypeFor[Duration]()

// shortForm is a struct that YAML may also write as a scalar.
type shortForm interface{ decodeShort([]byte) error }

// decodeValue decodes raw into v, which is settable.
func decodeValue(raw json.RawMessage, v reflect.Value, path string) *fieldError {
	if string(raw) == "null" {
		// "- stopLoad:" is the kind with its defaults; any other null is
		// the zero value.
		if v.Kind() == reflect.Pointer && v.Type().Elem().Kind() == reflect.Struct && v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return nil
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return decodeValue(raw, v.Elem(), path)
	}
	if v.Type() == durationType {
		if err := v.Addr().Interface().(*Duration).UnmarshalJSON(raw); err != nil {
			return &fieldError{path: path, msg: err.Error()}
		}
		return nil
	}
	if sf, ok := v.Addr().Interface().(shortForm); ok && raw[0] != '{' {
		if err := sf.decodeShort(raw); err != nil {
			return &fieldError{path: path, msg: err.Error()}
		}
		return nil
	}
	switch v.Kind() {
	case reflect.Struct:
		if raw[0] != '{' {
			return &fieldError{path: path, msg: "want an object, got " + describeJSON(raw)}
		}
		keys, vals, err := objectFields(raw)
		if err != nil {
			return &fieldError{path: path, msg: err.Error()}
		}
		fields, names := jsonFields(v.Type())
		for i, k := range keys {
			idx, ok := fields[k]
			if !ok {
				return &fieldError{path: join(path, k), isUnknown: true, unknown: k, known: names}
			}
			if fe := decodeValue(vals[i], v.Field(idx), join(path, k)); fe != nil {
				return fe
			}
		}
		return nil
	case reflect.Slice:
		var elems []json.RawMessage
		if raw[0] != '[' || json.Unmarshal(raw, &elems) != nil {
			return &fieldError{path: path, msg: "want a list, got " + describeJSON(raw)}
		}
		s := reflect.MakeSlice(v.Type(), len(elems), len(elems))
		for i, e := range elems {
			if fe := decodeValue(e, s.Index(i), path+"["+strconv.Itoa(i)+"]"); fe != nil {
				return fe
			}
		}
		v.Set(s)
		return nil
	case reflect.String:
		if isJSONNumber(raw) {
			v.SetString(string(raw)) // "stages: 1", "from: 2"
			return nil
		}
		if string(raw) == "true" || string(raw) == "false" {
			return &fieldError{path: path, msg: "want a string, got " + string(raw) + " (YAML reads an unquoted yes, no, y, n, on or off as true or false: quote it)"}
		}
		var s string
		if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
			return &fieldError{path: path, msg: "want a string, got " + describeJSON(raw)}
		}
		v.SetString(s)
		return nil
	case reflect.Bool:
		switch string(raw) {
		case "true":
			v.SetBool(true)
		case "false":
			v.SetBool(false)
		default:
			return &fieldError{path: path, msg: "want true or false, got " + describeJSON(raw)}
		}
		return nil
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(string(raw), 10, v.Type().Bits())
		if err != nil {
			return &fieldError{path: path, msg: "want an integer, got " + describeJSON(raw)}
		}
		v.SetInt(n)
		return nil
	case reflect.Float64:
		if !isJSONNumber(raw) {
			return &fieldError{path: path, msg: "want a number, got " + describeJSON(raw)}
		}
		f, err := strconv.ParseFloat(string(raw), 64)
		if err != nil {
			return &fieldError{path: path, msg: "want a number, got " + describeJSON(raw)}
		}
		v.SetFloat(f)
		return nil
	}
	panic(fmt.Sprintf("drill: decode: unhandled %s at %q", v.Type(), path)) // a field type added without decoding it
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// objectFields returns an object's keys and values in document order.
func objectFields(raw []byte) ([]string, []json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, nil, fmt.Errorf("want an object, got %s", describeJSON(raw))
	}
	var keys []string
	var vals []json.RawMessage
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		k, _ := t.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, err
		}
		keys = append(keys, k)
		vals = append(vals, v)
	}
	return keys, vals, nil
}

// jsonFields maps a struct's JSON names to field indexes, and lists the
// names in field order.
func jsonFields(t reflect.Type) (map[string]int, []string) {
	m := map[string]int{}
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		m[name] = i
		names = append(names, name)
	}
	return m, names
}

// strictUnmarshal is json.Unmarshal refusing unknown fields.
func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// describeJSON renders a JSON value for an error message.
func describeJSON(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return "nothing"
	}
	switch b[0] {
	case '{':
		return "an object"
	case '[':
		return "a list"
	case '"':
		var s string
		if json.Unmarshal(b, &s) == nil {
			if utf8.RuneCountInString(s) > 40 {
				s = string([]rune(s)[:40]) + "..."
			}
			return strconv.Quote(s)
		}
	}
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}

// suggest returns the name in known that key most likely meant: the same
// name in another case, or one within two edits; "" if none.
func suggest(key string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if strings.EqualFold(k, key) {
			return k
		}
		if d := editDistance(strings.ToLower(key), strings.ToLower(k)); d < bestD && d < len(k)/2+1 {
			best, bestD = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 30
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
