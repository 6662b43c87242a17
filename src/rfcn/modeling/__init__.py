"""rfcn.modeling"""
