"""What main-terraform deploys, read from its HCL for the local run: the IAM policy documents of the
three functions and of the state machine, and each function's timeout, memory and /tmp size.

A deliberately small evaluator of Terraform expressions over python-hcl2's parse tree: references to
``var.*`` (the variables' defaults, as the default deploy resolves them), ``local.*``, ``path.module``,
the iteration variables of ``for`` expressions and ``each.key``; string templates, lists, maps, indexes,
``for`` expressions and the functions the stack's policies use (``FUNCTIONS``). A value Terraform learns
from the account at apply time (``data.aws_caller_identity.current.account_id``, the SSM parameters'
values, a resource's ``arn``) comes from ``known``, given by the caller (the emulated deploy). Anything
else -- an unknown reference, function, block or argument -- raises RenderError naming it: the local
run never guesses a permission.
"""
import functools
import json
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, NoReturn, Optional, Tuple, Union

import hcl2
from lark import Token, Tree

from totesys_local.errors import LocalError

MAIN_TERRAFORM = Path(__file__).resolve().parents[2] / "main-terraform"
# The inline policy of each role (data "aws_iam_policy_document" <name> in iam.tf).
POLICY_DOCUMENTS = ("ingest", "transform", "load", "state_machine")
# Lambda's /tmp when a function sets no ephemeral_storage block (AWS's default, MB).
DEFAULT_EPHEMERAL_STORAGE_MB = 512
# The statement arguments rendered; any other (condition, principals, not_actions, ...) is refused.
STATEMENT_ARGUMENTS = {"sid": "Sid", "effect": "Effect", "actions": "Action", "resources": "Resource"}


# The names in scope while an expression is evaluated: for variables, ``each``.
Scope = Dict[str, Any]
# The label of a data or resource block: (kind, type, name).
BlockKey = Tuple[str, str, str]


class RenderError(LocalError):
    """main-terraform holds something this renderer cannot resolve; the message names it."""


class Stack:
    """One Terraform directory, parsed: its locals, variables, data and resource blocks as trees."""

    def __init__(self, directory: Union[str, Path]) -> None:
        self.directory = Path(directory)
        self.locals: Dict[str, Tuple[Tree, str]] = {}
        self.variables: Dict[str, Optional[Tree]] = {}
        self.blocks: Dict[BlockKey, Tree] = {}
        for path in sorted(self.directory.glob("*.tf")):
            for block in _children(hcl2.parses_to_tree(path.read_text())):
                self._add(block, path.name)

    def _add(self, block: Tree, file_name: str) -> None:
        if block.data != "block":
            return
        kind, labels, body = _block_parts(block)
        if kind == "locals":
            self.locals.update({name: (value, file_name) for name, value in _attributes(body).items()})
        elif kind == "variable":
            default = _attributes(body).get("default")
            self.variables[labels[0]] = default
        elif kind in ("data", "resource") and len(labels) == 2:
            self.blocks[(kind, labels[0], labels[1])] = body


@functools.lru_cache(maxsize=4)
def _parsed(directory: Path, fingerprint: Tuple[Tuple[str, int], ...]) -> Stack:
    return Stack(directory)


def load_stack(directory: Union[str, Path] = MAIN_TERRAFORM) -> Stack:
    """The parsed stack, cached until one of its files changes."""
    directory = Path(directory)
    fingerprint = tuple((p.name, p.stat().st_mtime_ns) for p in sorted(directory.glob("*.tf")))
    return _parsed(directory, fingerprint)


# -- the parse tree ----------------------------------------------------------------------------------

def _children(node: Tree) -> List[Tree]:
    """The sub-trees of ``node`` (punctuation tokens and comments left out)."""
    body = node.children[0] if node.data == "start" else node
    return [child for child in body.children
            if isinstance(child, Tree) and child.data != "new_line_or_comment"]


def _block_parts(block: Tree) -> Tuple[str, List[str], Tree]:
    """(kind, [labels], body) of a block."""
    kind = _name(block.children[0])
    labels = [_literal_string(child) for child in block.children[1:]
              if isinstance(child, Tree) and child.data == "string"]
    body = next(child for child in block.children if isinstance(child, Tree) and child.data == "body")
    return kind, labels, body


def _name(identifier: Tree) -> str:
    return str(identifier.children[0])


def _literal_string(node: Tree) -> str:
    return "".join(str(part.children[0]) for part in node.children
                   if isinstance(part, Tree) and part.data == "string_part")


def _attributes(body: Tree) -> Dict[str, Tree]:
    """{name: expression tree} of a body's attributes."""
    found = {}
    for child in _children(body):
        if child.data == "attribute":
            found[_name(child.children[0])] = child.children[-1]
    return found


def _nested_blocks(body: Tree, kind: str) -> List[Tree]:
    return [child for child in _children(body) if child.data == "block" and _name(child.children[0]) == kind]


# -- evaluation -------------------------------------------------------------------------------------

def _concat(*lists: List[Any]) -> List[Any]:
    return [item for items in lists for item in items]


def _flatten(items: List[Any]) -> List[Any]:
    flat: List[Any] = []
    for item in items:
        flat.extend(_flatten(item) if isinstance(item, list) else [item])
    return flat


FUNCTIONS: Dict[str, Callable[..., Any]] = {
    "concat": _concat,
    "flatten": _flatten,
    "values": lambda mapping: [mapping[key] for key in sorted(mapping)],
    "keys": lambda mapping: sorted(mapping),
    "jsondecode": json.loads,
    "tostring": str,
}


class Evaluator:
    """Evaluates expressions of ``stack`` with ``known`` ({dotted reference: value}) for what only
    the account knows."""

    def __init__(self, stack: Stack, known: Mapping[str, Any]) -> None:
        self.stack = stack
        self.known = dict(known)
        self.local_values: Dict[str, Any] = {}

    def value(self, node: Tree, scope: Optional[Scope] = None, where: str = "main-terraform") -> Any:
        self.where = where
        return self._eval(node, scope or {})

    def _fail(self, message: str) -> NoReturn:
        raise RenderError(f"{self.where}: {message} (main-terraform cannot be rendered for the local run)")

    def _eval(self, node: Union[Tree, Token], scope: Scope) -> Any:
        if isinstance(node, Token):
            return self._fail(f"unexpected token {node!r}")
        handler = getattr(self, f"_{node.data}", None)
        if handler is None:
            return self._fail(f"unsupported expression {node.data!r}")
        return handler(node, scope)

    def _trees(self, node: Tree) -> List[Tree]:
        return [child for child in node.children
                if isinstance(child, Tree) and child.data != "new_line_or_comment"]

    def _expr_term(self, node: Tree, scope: Scope) -> Any:
        inner = self._trees(node)
        if len(inner) != 1:
            return self._fail("unsupported expression term")
        return self._eval(inner[0], scope)

    def _int_lit(self, node: Tree, scope: Scope) -> Any:
        return int(str(node.children[0]))

    def _float_lit(self, node: Tree, scope: Scope) -> Any:
        return float(str(node.children[0]))

    def _literal_value(self, node: Tree, scope: Scope) -> Any:
        text = str(node.children[0])
        if text in ("true", "false"):
            return text == "true"
        return self._fail(f"unsupported literal {text}")

    def _string(self, node: Tree, scope: Scope) -> Any:
        parts = [part for part in node.children if isinstance(part, Tree) and part.data == "string_part"]
        values = []
        for part in parts:
            piece = part.children[0]
            if isinstance(piece, Tree) and piece.data == "interpolation":
                values.append(self._eval(self._trees(piece)[0], scope))
            else:
                values.append(str(piece).replace('\\"', '"').replace("\\\\", "\\"))
        if len(values) == 1 and len(parts) == 1 and not isinstance(values[0], str):
            return values[0]  # "${expr}" is the value itself, as in Terraform
        return "".join(str(value) for value in values)

    def _tuple(self, node: Tree, scope: Scope) -> Any:
        return [self._eval(child, scope) for child in self._trees(node)]

    def _object(self, node: Tree, scope: Scope) -> Any:
        result = {}
        for element in self._trees(node):
            key_node, value_node = self._trees(element)
            key_expr = self._trees(key_node)[0]
            inner = self._trees(key_expr)
            if len(inner) == 1 and inner[0].data == "identifier":
                key = str(inner[0].children[0])
            else:
                key = self._eval(key_expr, scope)
            result[key] = self._eval(value_node, scope)
        return result

    def _function_call(self, node: Tree, scope: Scope) -> Any:
        name = str(node.children[0].children[0])
        arguments = [child for child in self._trees(node)[1:] if child.data == "arguments"]
        args = [self._eval(arg, scope) for arg in self._trees(arguments[0])] if arguments else []
        if name == "file":
            return (Path(args[0])).read_text()
        if name not in FUNCTIONS:
            return self._fail(f"function {name}() is not supported")
        return FUNCTIONS[name](*args)

    def _index_expr_term(self, node: Tree, scope: Scope) -> Any:
        base, index = self._trees(node)
        container = self._eval(base, scope)
        key = self._eval(self._trees(index)[0], scope)
        try:
            return container[key]
        except (KeyError, IndexError, TypeError):
            return self._fail(f"no element {key!r}")

    def _identifier(self, node: Tree, scope: Scope) -> Any:
        name = str(node.children[0])
        if name in scope:
            return scope[name]
        return self._reference([name], scope)

    def _get_attr_expr_term(self, node: Tree, scope: Scope) -> Any:
        chain = self._chain(node)
        if chain is None:  # an attribute of a computed value (e.g. fn.arn of a for variable)
            base, attr = self._trees(node)
            container = self._eval(base, scope)
            name = str(self._trees(attr)[0].children[0])
            if not isinstance(container, dict) or name not in container:
                return self._fail(f"no attribute {name!r}")
            return container[name]
        if chain[0] in scope:
            value = scope[chain[0]]
            for name in chain[1:]:
                if not isinstance(value, dict) or name not in value:
                    return self._fail(f"no attribute {'.'.join(chain)}")
                value = value[name]
            return value
        return self._reference(chain, scope)

    def _chain(self, node: Tree) -> Optional[List[str]]:
        """The dotted names of ``a.b.c`` (None when the root is not a plain name)."""
        base, attr = self._trees(node)
        name = str(self._trees(attr)[0].children[0])
        inner = self._trees(base)[0] if base.data == "expr_term" else base
        if inner.data == "identifier":
            return [str(inner.children[0]), name]
        if inner.data == "get_attr_expr_term":
            head = self._chain(inner)
            return None if head is None else head + [name]
        return None

    def _reference(self, chain: List[str], scope: Scope) -> Any:
        root = chain[0]
        if root == "var":
            return self._attributes_of(self._variable(chain[1]), chain[2:], chain)
        if root == "local":
            return self._attributes_of(self._local(chain[1]), chain[2:], chain)
        if root == "path" and chain[1:] == ["module"]:
            return str(self.stack.directory)
        for size in range(len(chain), 0, -1):
            dotted = ".".join(chain[:size])
            if dotted in self.known:
                return self._attributes_of(self.known[dotted], chain[size:], chain)
        return self._fail(f"{'.'.join(chain)} is not known locally (a value Terraform learns from the "
                          "account: give it to the renderer)")

    def _attributes_of(self, value: Any, names: List[str], chain: List[str]) -> Any:
        for name in names:
            if not isinstance(value, dict) or name not in value:
                return self._fail(f"no attribute {'.'.join(chain)}")
            value = value[name]
        return value

    def _variable(self, name: str) -> Any:
        default = self.stack.variables.get(name)
        if default is None:
            return self._fail(f"var.{name} has no default")
        return self._eval(default, {})

    def _local(self, name: str) -> Any:
        if name not in self.local_values:
            if name not in self.stack.locals:
                return self._fail(f"local.{name} is not defined")
            tree, file_name = self.stack.locals[name]
            where = self.where
            self.local_values[name] = self.value(tree, where=f"{file_name}: local.{name}")
            self.where = where
        return self.local_values[name]

    def _for_intro(self, node: Tree, scope: Scope) -> Iterator[Scope]:
        names = [str(child.children[0]) for child in self._trees(node) if child.data == "identifier"]
        collection = self._eval(self._trees(node)[-1], scope)
        if isinstance(collection, dict):
            pairs = [(key, collection[key]) for key in sorted(collection)]
        else:
            pairs = list(enumerate(collection))
        for key, item in pairs:
            yield dict(scope, **({names[0]: key, names[1]: item} if len(names) == 2 else {names[0]: item}))

    def _for_tuple_expr(self, node: Tree, scope: Scope) -> Any:
        intro, *rest = self._trees(node)
        if len(rest) != 1:
            return self._fail("a for expression with an if clause is not supported")
        return [self._eval(rest[0], inner) for inner in self._for_intro(intro, scope)]

    def _for_object_expr(self, node: Tree, scope: Scope) -> Any:
        intro, *rest = self._trees(node)
        if len(rest) != 2:
            return self._fail("a for expression with an if clause or grouping is not supported")
        return {self._eval(rest[0], inner): self._eval(rest[1], inner)
                for inner in self._for_intro(intro, scope)}


# -- what the local run uses ------------------------------------------------------------------------

def render_policy(evaluator: Evaluator, name: str) -> Dict[str, Any]:
    """The JSON policy document (a dict) Terraform builds from data "aws_iam_policy_document" ``name``."""
    body = evaluator.stack.blocks.get(("data", "aws_iam_policy_document", name))
    if body is None:
        raise RenderError(f"iam.tf: no aws_iam_policy_document {name!r}")
    statements: List[Dict[str, Any]] = []
    for block in _nested_blocks(body, "statement"):
        _, _, statement_body = _block_parts(block)
        extra = [_name(child.children[0]) for child in _children(statement_body) if child.data == "block"]
        arguments = _attributes(statement_body)
        unsupported = sorted(set(arguments) - set(STATEMENT_ARGUMENTS)) + extra
        if unsupported:
            raise RenderError(f"iam.tf: policy {name}: statement arguments {unsupported} are not enforced "
                              "locally; extend totesys_local.terraform_values")
        statement: Dict[str, Any] = {"Effect": "Allow"}
        for argument, key in STATEMENT_ARGUMENTS.items():
            if argument in arguments:
                statement[key] = evaluator.value(arguments[argument],
                                                 where=f"iam.tf: policy {name}.{argument}")
        statements.append(statement)
    return {"Version": "2012-10-17", "Statement": statements}


def render_policies(known: Mapping[str, Any],
                    directory: Union[str, Path] = MAIN_TERRAFORM) -> Dict[str, Dict[str, Any]]:
    """{document name: policy dict} for POLICY_DOCUMENTS, with ``known`` for the account's values."""
    evaluator = Evaluator(load_stack(directory), known)
    return {name: render_policy(evaluator, name) for name in POLICY_DOCUMENTS}


def function_limits(directory: Union[str, Path] = MAIN_TERRAFORM) -> Dict[str, Dict[str, Any]]:
    """{stage: {"timeout": s, "memory_mb": MB, "ephemeral_storage_mb": MB}} of aws_lambda_function.stage,
    as the default deploy sets them."""
    stack = load_stack(directory)
    evaluator = Evaluator(stack, {})
    body = stack.blocks[("resource", "aws_lambda_function", "stage")]
    arguments = _attributes(body)
    stages = evaluator.value(arguments["for_each"], where="lambda.tf: for_each")
    storage = _nested_blocks(body, "ephemeral_storage")
    limits: Dict[str, Dict[str, Any]] = {}
    for stage in stages:
        scope = {"each": {"key": stage, "value": stages[stage]}}
        size = DEFAULT_EPHEMERAL_STORAGE_MB
        if storage:
            _, _, storage_body = _block_parts(storage[0])
            size = evaluator.value(_attributes(storage_body)["size"], scope, "lambda.tf: ephemeral_storage")
        limits[stage] = {
            "timeout": evaluator.value(arguments["timeout"], scope, "lambda.tf: timeout"),
            "memory_mb": evaluator.value(arguments["memory_size"], scope, "lambda.tf: memory_size"),
            "ephemeral_storage_mb": size,
        }
    return limits
