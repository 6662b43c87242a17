"""rfcn.tools"""
