"""The accrue AWS CDK app: one construct per concern (see stack.py)."""

import os

# jsii starts Node on the first aws_cdk import and prints a banner for Node 20; silence it before
# any submodule imports aws_cdk. (The end-of-life variable takes the major versions to accept.)
for _name, _value in {
    "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "18,20",
    "JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION": "1",
    "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
}.items():
    os.environ.setdefault(_name, _value)
