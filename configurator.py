"""
The one command-line convention of every script, nanoGPT's, with clear errors:

    python train.py config/tiny_text.py --batch_size=32 --out_dir=out/x
    python prepare_data.py text --input='data/raw/*.jsonl' --out=data/text
    python study.py --fast

train.py keeps its defaults as plain module-level assignments and calls `configure(globals())`.
The other scripts keep theirs in a dict (one per command) and call `parse(defaults)` or
`parse_command(commands)`, which return the settings as a dict.

Config files are plain Python, executed in order, each seeing the values so far. `--key=value`
is parsed with ast.literal_eval and falls back to the raw string (a key whose default is a string
takes the text as written). A bare `--flag` sets a True/False key to True. Every assignment is
checked: an unknown key names the closest known keys, a wrong type names the key, the expected
type and the value (an int is accepted for a float; a key whose default is None takes anything).
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
    if not arg.startswith('--'):
        raise ConfigError(f"malformed argument '{arg}': expected a config file or --key=value")
    if '=' not in arg:  # a bare --flag: True, for a True/False key only
        key = arg[2:]
        if key in defaults and not isinstance(defaults[key], bool):
            raise ConfigError(f"malformed argument '{arg}': '{key}' is not a True/False key, "
                              f"write --{key}=VALUE")
        return key, check_value(key, True, defaults, arg)
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
    lines = [f"usage: python {script} [CONFIG.py ...] [--key=value ...] [--flag ...]", "",
             "config keys (default):"]
    lines += [f"  {k:<{width}}  {v!r}" for k, v in defaults.items()]
    return "\n".join(lines)


def parse(defaults, argv=None, script=None):
    """A script's settings: `defaults` updated by argv (config files, --key=value, --flag). Exits with
    one clear line on bad input, and with the list of keys on --help."""
    argv = sys.argv[1:] if argv is None else list(argv)
    script = script or os.path.basename(sys.argv[0])
    if '--help' in argv or '-h' in argv:
        print(format_help(defaults, script))
        sys.exit(0)
    try:
        return apply_config(defaults, argv)
    except ConfigError as e:
        sys.exit(f"config error: {e}")


def parse_command(commands, argv=None, script=None):
    """(command, settings) for a script of several commands, `script COMMAND [--key=value ...]`:
    `commands` maps each command's name to its defaults."""
    argv = sys.argv[1:] if argv is None else list(argv)
    script = script or os.path.basename(sys.argv[0])
    if not argv or argv[0] not in commands:
        given = f"'{argv[0]}' is not one" if argv and not argv[0].startswith('-') else "give one first"
        if argv and argv[0] in ('--help', '-h'):
            print(f"usage: python {script} COMMAND [--key=value ...]; commands: {', '.join(commands)}")
            sys.exit(0)
        sys.exit(f"config error: {script} takes a command ({', '.join(commands)}); {given}")
    return argv[0], parse(commands[argv[0]], argv[1:], f"{script} {argv[0]}")


def require(config, *keys):
    """Exit with one line naming the first of `keys` left empty."""
    for key in keys:
        if config.get(key) in ('', None):
            sys.exit(f"config error: --{key}=... is required")


def configure(namespace, argv=None):
    """Apply argv to a script's globals in place (train.py's way); returns the settings."""
    config = parse(config_keys(namespace), argv)
    namespace.update(config)
    return config
