"README.md from nbs/index.ipynb without Quarto: drop `#| hide` cells and directive lines, then pandoc to GitHub Markdown (plots go to nbs/images/readme/)."
import json, re, shutil, subprocess, sys, tempfile
from pathlib import Path

# pandoc wraps every notebook cell and output in a <div>; GitHub Markdown reads better without them.
UNWRAP_CELLS = 'function Div(el) return el.content end'

# Images that markdown cells link from the notebook's folder stay links (pandoc's --extract-media would copy them):
# they are held out of pandoc's way as placeholders and put back relative to the README.
LINKED = re.compile(r'!\[([^\]]*)\]\((?!https?://|/)([^)\s]+)\)')
def _hold(m, linked):
    linked.append(m.groups())
    return f'KNEEAI-LINKED-IMAGE-{len(linked)-1}-'

def main(src, dest):
    nb = json.loads(Path(src).read_text())
    cells,n,linked = [],0,[]
    for c in nb['cells']:
        lines = ''.join(c['source']).splitlines(keepends=True)
        dirs = [l for l in lines if re.match(r'\s*#\|', l)]
        if any(re.match(r'\s*#\|\s*hide\b', d) for d in dirs): continue
        c['source'] = [l for l in lines if l not in dirs]
        if c['cell_type'] == 'markdown': c['source'] = [LINKED.sub(lambda m: _hold(m, linked), l) for l in c['source']]
        if c['cell_type'] == 'code': n += 1; c['execution_count'] = n  # nbdev-clean drops these; pandoc's reader needs them
        for o in c.get('outputs', []):
            o.setdefault('metadata', {})
            if o['output_type'] == 'execute_result': o['execution_count'] = n
        cells.append(c)
    nb['cells'] = cells
    with tempfile.NamedTemporaryFile('w', suffix='.ipynb', delete=False) as f: json.dump(nb, f)
    with tempfile.NamedTemporaryFile('w', suffix='.lua', delete=False) as lua: lua.write(UNWRAP_CELLS)
    media = Path(dest).parent/'nbs'/'images'/'readme'
    if media.exists(): shutil.rmtree(media)
    md = subprocess.run(['pandoc', f.name, '-f', 'ipynb', '-t', 'gfm', '--wrap=none', '--lua-filter', lua.name,
                         f'--extract-media={media.relative_to(Path(dest).parent)}'],
                        check=True, capture_output=True, text=True).stdout
    rel = Path(src).parent.resolve().relative_to(Path(dest).parent.resolve()).as_posix()
    for i,(alt,fn) in enumerate(linked): md = md.replace(f'KNEEAI-LINKED-IMAGE-{i}-', f'![{alt}]({rel}/{fn})')
    # plain links to files beside the notebook (e.g. a plot in nbs/images/) are made relative to the README as well
    here = lambda fn: (Path(src).parent/fn).exists() and not (Path(dest).parent/fn).exists()
    md = re.sub(r'(?<!!)\[([^\]]*)\]\((?!https?://|/|#)([^)\s]+)\)', lambda m: f'[{m[1]}]({rel}/{m[2]})' if here(m[2]) else m[0], md)
    Path(dest).write_text('<!-- generated from nbs/index.ipynb by `make readme`: edit the notebook, not this file -->\n\n' + md)

if __name__ == '__main__': main(*sys.argv[1:3])
