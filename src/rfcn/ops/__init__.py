"""rfcn.ops"""
