#!/usr/bin/env python3
"""Extract the merge facts of Kubernetes API fields into rkube's field-meta table.

k8s-openapi's schemas carry descriptions and types but not the extensions that say how a field
merges. Those facts live in the Go API types as struct tags (`patchStrategy`, `patchMergeKey`) and
comment markers (`+listType`, `+listMapKey`, `+mapType`, `+structType`). This script reads the Go
sources of the API modules and writes one line per annotated field:

    <definition> <property> <patch-strategy> <merge-key> <list-type> <list-map-keys> <map-type>

with `-` for an absent fact; `<property>` `.` means the definition itself. Usage:

    extract_field_meta.py OUT.tsv api=DIR apimachinery=DIR apiextensions=DIR aggregator=DIR

where each DIR is a checkout of that module (k8s.io/api, k8s.io/apimachinery,
k8s.io/apiextensions-apiserver, k8s.io/kube-aggregator) at the release matching k8s-openapi's
`latest` feature. The Rust side checks that every line names a real property of the schemas.
"""
import os
import re
import sys

MARKER = re.compile(r'^\s*//\s*\+(listType|listMapKey|mapType|structType|patchStrategy|patchMergeKey)=(\S+)')
TYPE_START = re.compile(r'^type\s+(\w+)\s+struct\s*{')
TYPE_OTHER = re.compile(r'^type\s+(\w+)\s+')
TAG = re.compile(r'`([^`]*)`')


def tag_value(tag, key):
    m = re.search(key + r':"([^"]*)"', tag)
    return m.group(1) if m else None


def parse_file(path):
    """Returns {type: {'.': markers, field: markers, ...}} and {type: [inline embedded types]}."""
    types, inlines = {}, {}
    pending = []
    current = None
    with open(path, encoding='utf-8') as f:
        for line in f:
            if current is None:
                m = TYPE_START.match(line)
                if m:
                    types[m.group(1)] = {'.': collect(pending)}
                    inlines[m.group(1)] = []
                    pending = []
                    if not line.rstrip().endswith('}'):  # `type X struct{}` has no body
                        current = m.group(1)
                    continue
                m = TYPE_OTHER.match(line)
                if m:
                    types.setdefault(m.group(1), {})['.'] = collect(pending)
                    pending = []
                    continue
                if line.lstrip().startswith('//'):
                    pending.append(line)
                elif not line.strip():
                    pass
                else:
                    pending = []
                continue
            if line.startswith('}'):
                current = None
                pending = []
                continue
            stripped = line.strip()
            if stripped.startswith('//'):
                pending.append(line)
                continue
            if not stripped:
                pending = []
                continue
            tm = TAG.search(line)
            if not tm:
                pending = []
                continue
            tag = tm.group(1)
            json_tag = tag_value(tag, 'json')
            if json_tag is None:
                pending = []
                continue
            name = json_tag.split(',')[0]
            facts = collect(pending)
            pending = []
            if name == '-':
                continue
            if name == '':
                # An embedded struct without a JSON name is inlined (`json:",inline"` or `json:""`).
                embedded = stripped.split()[0].lstrip('*')
                if '.' not in embedded:
                    inlines[current].append(embedded)
                continue
            strategy = tag_value(tag, 'patchStrategy')
            key = tag_value(tag, 'patchMergeKey')
            if strategy:
                facts['patchStrategy'] = strategy
            if key:
                facts['patchMergeKey'] = key
            types[current][name] = facts
    return types, inlines


def collect(lines):
    facts = {}
    for line in lines:
        m = MARKER.match(line)
        if not m:
            continue
        k, v = m.groups()
        if k == 'listMapKey':
            facts.setdefault('listMapKey', []).append(v)
        else:
            facts[k] = v
    return facts


def scan(root, prefix_of):
    """prefix_of(relative dir) -> definition prefix or None."""
    out = {}
    for dirpath, _, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        prefix = prefix_of(rel)
        if prefix is None:
            continue
        types, inlines = {}, {}
        for name in sorted(files):
            if not name.endswith('.go') or name.endswith('_test.go') or 'generated' in name or name.startswith('zz_'):
                continue
            t, i = parse_file(os.path.join(dirpath, name))
            for k, v in t.items():
                types.setdefault(k, {}).update(v)
            inlines.update(i)
        for type_name in types:
            fields = resolve(type_name, types, inlines, set())
            out[prefix + type_name] = fields
    return out


def resolve(type_name, types, inlines, seen):
    if type_name in seen:
        return {}
    seen = seen | {type_name}
    fields = {}
    for embedded in inlines.get(type_name, []):
        for k, v in resolve(embedded, types, inlines, seen).items():
            if k != '.':
                fields[k] = v
    fields.update(types.get(type_name, {}))
    return fields


def row(definition, prop, facts):
    strategy = facts.get('patchStrategy', '-')
    key = facts.get('patchMergeKey', '-')
    list_type = facts.get('listType', '-')
    map_keys = ','.join(facts.get('listMapKey', [])) or '-'
    map_type = facts.get('mapType') or facts.get('structType') or '-'
    if (strategy, key, list_type, map_keys, map_type) == ('-',) * 5:
        return None
    return '\t'.join([definition, prop, strategy, key, list_type, map_keys, map_type])


def main():
    out_path = sys.argv[1]
    roots = dict(arg.split('=', 1) for arg in sys.argv[2:])
    defs = {}
    if 'api' in roots:
        defs.update(scan(roots['api'], lambda rel: 'io.k8s.api.' + rel.replace('/', '.') + '.'
                         if rel.count('/') == 1 else None))
    if 'apimachinery' in roots:
        defs.update(scan(roots['apimachinery'], lambda rel: {
            'pkg/apis/meta/v1': 'io.k8s.apimachinery.pkg.apis.meta.v1.',
            'pkg/version': 'io.k8s.apimachinery.pkg.version.',
            'pkg/runtime': 'io.k8s.apimachinery.pkg.runtime.',
        }.get(rel)))
    if 'apiextensions' in roots:
        defs.update(scan(roots['apiextensions'], lambda rel: 'io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.'
                         if rel == 'pkg/apis/apiextensions/v1' else None))
    if 'aggregator' in roots:
        defs.update(scan(roots['aggregator'], lambda rel: 'io.k8s.kube-aggregator.pkg.apis.apiregistration.v1.'
                         if rel == 'pkg/apis/apiregistration/v1' else None))
    lines = []
    for definition in sorted(defs):
        for prop in sorted(defs[definition]):
            r = row(definition, prop, defs[definition][prop])
            if r:
                lines.append(r)
    with open(out_path, 'w', encoding='utf-8') as f:
        f.write('# Generated by crates/apiserver/tools/extract_field_meta.py; see its header.\n')
        f.write('# definition\tproperty\tpatch-strategy\tmerge-key\tlist-type\tlist-map-keys\tmap-type\n')
        for line in lines:
            f.write(line + '\n')


if __name__ == '__main__':
    main()
