"""
Config overrides with nanoGPT's semantics and clear errors:

    python train.py config/tiny_text.py --batch_size=32 --out_dir=out/x

A script keeps its defaults as plain module-level assignments, then calls

    config = configure(globals())

Config files are plain Python, executed in order, each seeing the values so far. `--key=value`
is parsed with ast.literal_eval and falls back to the raw string. Every assignment is checked:
an unknown key names the closest known keys, a wrong type names the key, the expected type and
the value (an int is accepted for a float; a key whose default is None takes anything).
`--help` lists every key with its default.
"""
import ast
import difflib
import os
import sys
import types

CONFIG_TYPES = (int, float, bool, str, tuple, list, dict, type(None))


class ConfigError(ValueError):
    pass


def config_keys(namespace):
    """The keys of a script's globals that are configuration: public names of plain values."""
    return {k: v for k, v in namespace.items()
            if not k.startswith('_') and isinstance(v, CONFIG_TYPES)}


def check_value(key, value, defaults, source):
    if key not in defaults:
        close = difflib.get_close_matches(key, list(defaults), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"{source}: unknown config key '{key}'{hint}")
    default = defaults[key]
    if default is None or value is None:
        return value
    expected = type(default)
    if expected is float and type(value) is int:
        return float(value)
    if expected in (tuple, list) and isinstance(value, (tuple, list)):
        return expected(value)
    if type(value) is not expected:
        raise ConfigError(f"{source}: config key '{key}' expects {expected.__name__} "
                          f"(default {default!r}), got {type(value).__name__} {value!r}")
    return value


def parse_override(arg, defaults):
    if not arg.startswith('--') or '=' not in arg:
        raise ConfigError(f"malformed argument '{arg}': expected a config file or --key=value")
    key, raw = arg[2:].split('=', 1)
    if key in defaults and isinstance(defaults[key], str):
        value = raw  # a string key takes the text as written (--init_from=80 stays '80')
    else:
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
    return key, check_value(key, value, defaults, f"--{key}")


def apply_config(defaults, argv):
    """Return a new dict: defaults updated by config files and --key=value arguments, in order."""
    config = dict(defaults)
    for arg in argv:
        if arg.startswith('--'):
            key, value = parse_override(arg, defaults)
            config[key] = value
            continue
        if not os.path.isfile(arg):
            raise ConfigError(f"config file not found: '{arg}'")
        namespace = dict(config)
        with open(arg) as f:
            source = f.read()
        try:
            exec(compile(source, arg, 'exec'), namespace)
        except Exception as e:
            raise ConfigError(f"{arg}: {type(e).__name__}: {e}") from e
        for key, value in namespace.items():
            if key.startswith('_') or isinstance(value, (types.ModuleType, types.FunctionType, type)):
                continue
            if key in config and value is config[key]:
                continue
            config[key] = check_value(key, value, defaults, arg)
    return config


def format_help(defaults, script):
    width = max(len(k) for k in defaults)
    lines = [f"usage: python {script} [config/file.py ...] [--key=value ...]", "", "config keys (default):"]
    lines += [f"  {k:<{width}}  {v!r}" for k, v in defaults.items()]
    return "\n".join(lines)


def configure(namespace, argv=None):
    """Apply sys.argv to a script's globals in place; exit with a clear message on bad input."""
    argv = sys.argv[1:] if argv is None else argv
    defaults = config_keys(namespace)
    if '--help' in argv or '-h' in argv:
        print(format_help(defaults, os.path.basename(sys.argv[0])))
        sys.exit(0)
    try:
        config = apply_config(defaults, argv)
    except ConfigError as e:
        sys.exit(f"config error: {e}")
    namespace.update(config)
    return config
