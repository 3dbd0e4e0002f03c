"""Tools for developing against the optimizer; never part of the Lambda function's code.

The function ships ``handler/`` only (``next_image_cdk.construct.stage_function_code``), so
nothing here may be imported by ``handler``: these modules may pull in moto, Node.js and servers.
"""
