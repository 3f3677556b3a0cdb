"""Rewrites kernel<<<g, b, s, st>>>(args); launches into ::emu::launch(g, b, s, st, [&] { kernel(args); });"""

import sys


def split_top(s):
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch in "(<[{":
            depth += 1
        if ch in ")>]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts]


def transform(src):
    out = src
    while "<<<" in out:
        i = out.index("<<<")
        j = out.index(">>>", i)
        cfg = out[i + 3 : j]
        k = j + 3
        while out[k].isspace():
            k += 1
        assert out[k] == "(", out[k : k + 20]
        depth, e = 0, k
        while True:
            if out[e] == "(":
                depth += 1
            elif out[e] == ")":
                depth -= 1
                if depth == 0:
                    break
            e += 1
        args = out[k + 1 : e]
        s = i
        while out[s - 1] not in ";{}":
            s -= 1
        kernel = out[s:i].strip()
        g = split_top(cfg)
        lead = out[s:i][: len(out[s:i]) - len(out[s:i].lstrip())]
        out = (
            out[:s]
            + lead
            + f"::emu::launch({g[0]}, {g[1]}, {g[2]}, {g[3]}, [&]() {{ {kernel}({args}); }})"
            + out[e + 1 :]
        )
    return out


for path, dst in zip(sys.argv[1::2], sys.argv[2::2]):
    open(dst, "w").write(transform(open(path).read()))
